"""Labelled texts to benchmark on: the bundled reviews, a file of rows, or a Hugging Face-style dataset folder.

Files: ``.jsonl`` (one object a line), ``.json`` (a list of objects), ``.csv`` / ``.tsv`` (a header row), ``.txt``
(one unlabelled text a line). Columns are found by their usual names: the text in ``text``, ``sentence``,
``content`` or ``review``; the label (optional) in ``label``, ``class`` or ``sentiment``; an id (optional) in ``id``,
``idx`` or ``guid``. A label is a class name or a class index; a negative index means unlabelled (how Hugging Face
datasets mark hidden test labels). A folder is read as a dataset repository: its data files (also in
sub-folders such as ``data/``), one split of them when file names say ``train``/``validation``/``test``, and the
class names of index labels from its ``dataset_info.json`` or dataset card (``README.md``).

Everything is read and checked before a model runs: a missing, undecodable or empty file, a row without text
or a label that names no class fails at once, naming the file and the row.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, UnknownClassError
from .checks import check_text

__all__ = ["BUNDLED", "LabelledText", "TextSet", "bundled_texts", "read_texts"]

#: what names the bundled set where a path is expected
BUNDLED = "examples"
TEXT_COLUMNS = ("text", "sentence", "content", "review")
LABEL_COLUMNS = ("label", "class", "sentiment")
ID_COLUMNS = ("id", "idx", "guid")
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
#: what ``datasets``' ``save_to_disk`` writes beside the data: never texts
METADATA = ("dataset_info.json", "state.json", "dataset_dict.json")
SPLITS = ("train", "validation", "valid", "dev", "test")


@dataclass(frozen=True)
class LabelledText:
    """One text: ``id`` (unique; the key of its result rows), the ``text``, and its ``label`` as the source
    gives it: a class name, a class index, or None when unlabelled."""

    id: str
    text: str
    label: str | int | None = None


@dataclass(frozen=True)
class TextSet:
    """Texts with what their source says about the classes: ``classes`` (names in index order, when known) and
    ``template``, the source's own way of turning a class name into a label description for zero-shot models
    (the bundled reviews: ``"This review is {}."``)."""

    texts: tuple[LabelledText, ...]
    classes: tuple[str, ...] = ()
    template: str | None = None
    source: str = ""

    def class_indices(self, classes: Sequence[str]) -> list[int | None]:
        """Each text's label as an index into ``classes`` (None: unlabelled); a label that names no class is an
        :class:`UnknownClassError` naming the text."""
        lowered = [c.lower() for c in classes]
        out: list[int | None] = []
        for t in self.texts:
            label = t.label
            if label is None:
                out.append(None)
                continue
            if isinstance(label, str) and label.lower() in lowered:
                out.append(lowered.index(label.lower()))
                continue
            index = _as_index(label)
            if index is None or index >= len(classes):
                shown = ", ".join(classes) if len(classes) <= 20 else ", ".join(classes[:20]) + ", ..."
                raise UnknownClassError(
                    f"unknown label {label!r} of text {t.id!r} in {self.source}; the classes are: {shown} "
                    "(names, or indices from 0)"
                )
            out.append(None if index < 0 else index)
        return out

    def named(self) -> TextSet:
        """The same texts with each label as the name of its class in :attr:`classes`, so that index labels can be
        matched by name with a model whose labels come in another order."""
        indices = self.class_indices(self.classes)
        texts = tuple(
            LabelledText(t.id, t.text, None if i is None else self.classes[i]) for t, i in zip(self.texts, indices)
        )
        return TextSet(texts, self.classes, self.template, self.source)

    def has_index_labels(self) -> bool:
        return any(t.label is not None and _as_index(t.label) is not None for t in self.texts)

    def label_names(self) -> list[str]:
        """The distinct class names of the labels, in order of first appearance (index labels excluded)."""
        names = (t.label for t in self.texts if isinstance(t.label, str) and _as_index(t.label) is None)
        return list(dict.fromkeys(names))


def _labels_a_class_by_index(label: str | int) -> bool:
    """Whether ``label`` is a class index (a negative one marks an unlabelled text, whatever the others are)."""
    index = _as_index(label)
    return index is not None and index >= 0


def _as_index(label: str | int) -> int | None:
    if isinstance(label, int) and not isinstance(label, bool):
        return label
    text = str(label).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return None


def bundled_texts() -> TextSet:
    """80 short reviews written for this package (40 positive, 40 negative; MIT, see ``data/texts/LICENSES.md``)."""
    path = Path(str(resources.files("semantic_pullbacks").joinpath("data", "texts", "reviews.jsonl")))
    found = read_texts(path)
    return TextSet(found.texts, ("positive", "negative"), "This review is {}.", "the bundled reviews")


def read_texts(source: str | os.PathLike[str], *, split: str | None = None) -> TextSet:
    """The texts of ``source``: ``"examples"`` (the bundled reviews), a file, or a dataset folder (``split``
    chooses one of its splits by name)."""
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(f"texts must be 'examples', a file or a dataset folder, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists() and str(source).strip().lower() == BUNDLED:
        if split is not None:
            raise InvalidInputError("split= is for dataset folders; the bundled reviews have one split")
        return bundled_texts()
    if not path.exists():
        raise InvalidInputError(
            f"texts file or folder {str(path)!r} does not exist (or pass 'examples' for the bundled reviews)"
        )
    if path.is_dir():
        return _read_folder(path, split)
    if split is not None:
        raise InvalidInputError(f"split= is for dataset folders; {str(path)!r} is one file")
    texts = _unique(_texts(_records(path), path, prefix=path.stem))
    if not texts:
        raise InvalidInputError(f"texts file {str(path)!r} holds no texts")
    return TextSet(tuple(texts), source=repr(str(path)))


# ------------------------------------------------------------------------------------------------ files
def _records(path: Path) -> list[dict[str, Any]]:
    """The rows of one file as dicts (``.txt``: ``{"text": line}``)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInputError(
            f"texts file {str(path)!r}: unknown format {suffix or '(no suffix)'!r}; use {', '.join(SUFFIXES)}"
        )
    try:
        content = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInputError(
            f"texts file {str(path)!r} is not UTF-8 text (byte {e.start}): save it as UTF-8"
        ) from None
    except OSError as e:
        raise InvalidInputError(f"cannot read texts file {str(path)!r}: {e.strerror or e}") from None
    if suffix == ".txt":
        return [{"text": line} for line in content.splitlines() if line.strip()]
    if suffix == ".jsonl":
        return [_json_row(line, path, n) for n, line in enumerate(content.splitlines(), 1) if line.strip()]
    if suffix == ".json":
        try:
            data = json.loads(content) if content.strip() else []
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"texts file {str(path)!r} is not valid JSON (line {e.lineno}: {e.msg})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InvalidInputError(f"texts file {str(path)!r}: expected a JSON list of objects with a 'text' field")
        return data
    reader = csv.DictReader(content.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        rows = list(reader)
    except csv.Error as e:
        raise InvalidInputError(f"texts file {str(path)!r} is not valid {suffix[1:].upper()}: {e}") from None
    if rows and None in rows[0]:
        raise InvalidInputError(f"texts file {str(path)!r}: row 1 has more fields than the header")
    return rows


def _json_row(line: str, path: Path, n: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"texts file {str(path)!r}: line {n} is not valid JSON ({e.msg})") from None
    if not isinstance(row, dict):
        raise InvalidInputError(f"texts file {str(path)!r}: line {n} is not a JSON object with a 'text' field")
    return row


def _column(columns: Iterable[str], names: Sequence[str]) -> str | None:
    by_lower = {c.lower().strip(): c for c in columns}
    return next((by_lower[n] for n in names if n in by_lower), None)


def _texts(records: list[dict[str, Any]], path: Path, prefix: str) -> list[LabelledText]:
    if not records:
        return []
    columns = list(dict.fromkeys(k for r in records for k in r))  # a first row may lack the label or id
    text_col = _column(columns, TEXT_COLUMNS)
    if text_col is None:
        raise InvalidInputError(
            f"texts file {str(path)!r} has no text column (its columns: {', '.join(map(str, columns))}); name it "
            f"one of: {', '.join(TEXT_COLUMNS)}"
        )
    label_col, id_col = _column(columns, LABEL_COLUMNS), _column(columns, ID_COLUMNS)
    out = []
    for n, row in enumerate(records, 1):
        text = row.get(text_col)
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"texts file {str(path)!r}: row {n} has no text in column {text_col!r}")
        check_text(text, f"texts file {str(path)!r}: the text of row {n}")
        label = row.get(label_col) if label_col else None
        if isinstance(label, str):
            label = label.strip() or None
        elif label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise InvalidInputError(
                f"texts file {str(path)!r}: row {n} has label {label!r}; a label is a class name or index"
            )
        ident = row.get(id_col) if id_col else None
        ident = str(ident).strip() if ident is not None and str(ident).strip() else f"{prefix}-{n:05d}"
        check_text(ident, f"texts file {str(path)!r}: the id of row {n}", printable=False)
        out.append(LabelledText(ident, text, label))
    _check_label_kinds(out, f"texts file {str(path)!r}")
    return out


def _check_label_kinds(texts: Sequence[LabelledText], source: str) -> None:
    """Labels are class names or class indices, never both in one source: an index beside names has no class
    order to point into but the order the names happen to appear in (reordering the file would change it)."""
    named = next((t for t in texts if t.label is not None and _as_index(t.label) is None), None)
    indexed = next((t for t in texts if t.label is not None and _labels_a_class_by_index(t.label)), None)
    if named is not None and indexed is not None:
        raise InvalidInputError(
            f"the labels of {source} mix class names and class indices (text {named.id!r}: {named.label!r}, text "
            f"{indexed.id!r}: {indexed.label!r}): label every text by name, or every text by index"
        )


def _unique(texts: list[LabelledText]) -> list[LabelledText]:
    """Ids key the result rows: a repeated id gets the first suffix ``~n`` that no text has or was given (the
    first text of each id keeps it, so ``r, r, r~1`` become ``r, r~2, r~1``)."""
    taken = {t.id for t in texts}
    kept: set[str] = set()
    out = []
    for t in texts:
        if t.id not in kept:
            kept.add(t.id)
            out.append(t)
            continue
        n = 1
        while f"{t.id}~{n}" in taken:
            n += 1
        taken.add(f"{t.id}~{n}")
        out.append(LabelledText(f"{t.id}~{n}", t.text, t.label))
    return out


# ------------------------------------------------------------------------------------------------ folders
def _split_of(path: Path) -> str:
    """The split a data file belongs to, from its name (``test.jsonl``, ``test-00000-of-00001.csv``)."""
    head = path.stem.lower().replace("_", "-").split("-")[0].split(".")[0]
    return head if head in SPLITS else ""


def _hidden(path: Path) -> bool:
    return any(part.startswith(".") for part in path.parts)


def _read_folder(folder: Path, split: str | None) -> TextSet:
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and p.name.lower() not in METADATA
        and not _hidden(p.relative_to(folder))
    )
    if not files:
        raise InvalidInputError(f"texts folder {str(folder)!r} holds no data files ({', '.join(SUFFIXES)})")
    splits = sorted({_split_of(f) for f in files} - {""})
    if split is not None:
        if split.lower() not in splits:
            raise InvalidInputError(
                f"texts folder {str(folder)!r} has no split {split!r}; its splits: {', '.join(splits) or '(none)'}"
            )
        files = [f for f in files if _split_of(f) == split.lower()]
    elif len(splits) > 1:
        raise InvalidInputError(
            f"texts folder {str(folder)!r} has the splits {', '.join(splits)}: choose one with split= (--split)"
        )
    texts: list[LabelledText] = []
    for f in files:
        prefix = str(f.relative_to(folder).with_suffix("")).replace(os.sep, "/")
        texts += _texts(_records(f), f, prefix=prefix)
    _check_label_kinds(texts, repr(str(folder)))
    if not texts:
        raise InvalidInputError(f"texts folder {str(folder)!r} holds no texts")
    return TextSet(tuple(_unique(texts)), tuple(_class_names(folder)), source=repr(str(folder)))


def _class_names(folder: Path) -> list[str]:
    """Class names of a dataset folder's index labels: ``dataset_info.json`` (``datasets``' ``save_to_disk``)
    or the dataset card's YAML header (``README.md`` of a dataset repository)."""
    info = folder / "dataset_info.json"
    if info.is_file():
        try:
            data = json.loads(info.read_text("utf-8"))
        except (OSError, ValueError):
            data = {}
        names = _label_names_in(data.get("features", {}) if isinstance(data, dict) else {})
        if names:
            return names
    card = folder / "README.md"
    if card.is_file():
        return _card_class_names(card)
    return []


def _label_names_in(features: Any) -> list[str]:
    """``{"label": {"names": [...]}}`` (save_to_disk) or ``[{"name": "label", "dtype": {"class_label": {"names":
    {"0": ..}}}}]`` (dataset cards)."""
    if isinstance(features, Mapping):
        for key in LABEL_COLUMNS:
            names = features.get(key, {}).get("names") if isinstance(features.get(key), Mapping) else None
            if isinstance(names, list):
                return [str(n) for n in names]
        return []
    if isinstance(features, list):
        for f in features:
            if isinstance(f, Mapping) and f.get("name") in LABEL_COLUMNS and isinstance(f.get("dtype"), Mapping):
                names = f["dtype"].get("class_label", {}).get("names")
                if isinstance(names, Mapping):
                    return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]
                if isinstance(names, list):
                    return [str(n) for n in names]
    return []


def _card_class_names(card: Path) -> list[str]:
    text = card.read_text("utf-8", errors="replace")
    if not text.startswith("---"):
        return []
    header = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    try:
        import yaml

        meta = yaml.safe_load(header)
    except Exception:  # no PyYAML, or a card whose header is not YAML: the classes stay unnamed
        return []
    infos = meta.get("dataset_info") if isinstance(meta, dict) else None
    for info in infos if isinstance(infos, list) else [infos]:
        if isinstance(info, Mapping):
            names = _label_names_in(info.get("features"))
            if names:
                return names
    return []
