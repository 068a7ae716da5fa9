"""Training data the user gives: seq2seq pairs from JSONL, TSV or a saved HF `datasets` folder.

    pairs = read_pairs("train.jsonl")                       # {"source": .., "target": ..} per line
    pairs = read_pairs("train.jsonl", source_field="en", target_field="de")
    pairs = read_pairs("train.tsv")                         # source<TAB>target
    pairs = read_pairs("hf_dir", split="train")             # Dataset(.save_to_disk); needs `datasets`
    texts = read_texts("sentences.txt")                     # one per line (MLM); JSONL/TSV: the source side

Every malformed line is reported by file and line number in one `DataError`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch


class DataError(ValueError):
    """The training data cannot be read; the message names the file, the line and what to fix."""


class Pair(NamedTuple):
    source: str
    target: str


def data_format(path: str | Path) -> str:
    """jsonl, tsv, txt or hf (a folder written by `datasets`' save_to_disk)."""
    path = Path(path)
    if path.is_dir():
        if any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return "hf"
        raise DataError(f"{path} is a folder but not a saved HF dataset (no dataset_info.json / dataset_dict.json)")
    if not path.exists():
        raise DataError(f"training data not found: {path}")
    suffix = path.suffix.lower()
    formats = {".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".txt": "txt"}
    if suffix not in formats:
        raise DataError(f"{path}: unknown data format {suffix!r}; give .jsonl, .tsv, .txt or a saved HF dataset dir")
    return formats[suffix]


def read_pairs(path: str | Path, source_field: str = "source", target_field: str = "target",
               split: str | None = None, limit: int | None = None) -> list[Pair]:
    """Every (source, target) pair of the file; empty sources or targets are errors, not skipped."""
    kind = data_format(path)
    if kind == "txt":
        raise DataError(f"{path}: a .txt file holds no pairs; give .jsonl ({{\"{source_field}\": .., "
                        f"\"{target_field}\": ..}}) or .tsv (source<TAB>target)")
    rows = _hf_rows(path, split) if kind == "hf" else _file_rows(Path(path), kind)
    pairs, problems = [], []
    for where, row in rows:
        if isinstance(row, list):  # a TSV line
            if len(row) != 2:
                problems.append(f"{where}: expected 2 tab-separated columns, got {len(row)}")
                continue
            source, target = row
        else:
            missing = [f for f in (source_field, target_field) if not isinstance(row.get(f), str)]
            if missing:
                problems.append(f"{where}: no text field {missing[0]!r} (fields: {', '.join(sorted(row)) or 'none'})")
                continue
            source, target = row[source_field], row[target_field]
        if not source.strip() or not target.strip():
            problems.append(f"{where}: empty {'source' if not source.strip() else 'target'}")
            continue
        pairs.append(Pair(source, target))
        if limit and len(pairs) >= limit:
            break
    _raise_if(problems, path)
    if not pairs:
        raise DataError(f"{path}: no training pairs")
    return pairs


def read_texts(path: str | Path, field: str = "source", split: str | None = None) -> list[str]:
    """Monolingual text: .txt lines, or one field of JSONL / one column of TSV / HF rows (source or target)."""
    if data_format(path) == "txt":
        texts = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise DataError(f"{path}: no text lines")
        return texts
    if field in ("source", "target") and data_format(path) == "tsv":
        pairs = read_pairs(path)
    else:
        pairs = read_pairs(path, source_field=field, target_field=field, split=split)
    return [p.target if field == "target" else p.source for p in pairs]


def _file_rows(path: Path, kind: str):
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if kind == "tsv":
            yield where, line.split("\t")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object per line")
        yield where, row


def _hf_rows(path: str | Path, split: str | None):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path} is a saved HF dataset, and reading it needs the `datasets` package "
                        "(pip install datasets), or export it to JSONL") from None
    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in data else next(iter(data))
        if split not in data:
            raise DataError(f"{path}: no split {split!r} (splits: {', '.join(data)})")
        data = data[split]
    for n, row in enumerate(data):
        yield f"{path}[{n}]", row


def _raise_if(problems: list[str], path) -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError(f"{path}: {len(problems)} bad row(s): " + "; ".join(problems[:3]) + more)


def seq2seq_batch(tokenizer, pairs: list[Pair], max_length: int = 128, device: torch.device | str = "cpu",
                  ignore_index: int = -100) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels (padding set to ignore_index) for a seq2seq model."""
    enc = tokenizer([p.source for p in pairs], text_target=[p.target for p in pairs], return_tensors="pt",
                    padding=True, truncation=True, max_length=max_length)
    enc["labels"][enc["labels"] == tokenizer.pad_token_id] = ignore_index
    return {k: v.to(device) for k, v in enc.items()}
