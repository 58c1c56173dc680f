"""Writing the embeddings of a list of audio files (``spk embed-audio``): a NumPy matrix or a Kaldi table.

An output is named the way ``spk embed-audio --out`` takes it:

- ``emb.npy``: an ``(N, E)`` float32 array whose row ``i`` is the ``i``-th file, and
  beside it ``emb.files.txt``, the files one per line in the same order (as given);
- ``ark:emb.ark``, ``ark,scp:emb.ark,emb.scp`` (``t`` after ``ark`` for a text ark):
  a Kaldi table through kaldiio, one float32 vector per file, keyed by the file's
  name without its extension (``dir/alice_1.wav`` -> ``alice_1``), entries in argument
  order; the scp points at the ark as it was spelled.

Keys must be unique and free of whitespace; :meth:`EmbeddingOutput.keys` says which
files clash before anything is computed. :meth:`EmbeddingOutput.write` writes every
file under a temporary name beside its destination and renames it into place only when
all are complete, so a failure leaves no partial output (and any old one as it was).
"""

from __future__ import annotations

import io
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["EmbeddingOutput", "EmbeddingOutputError", "OUT_FORMS"]

OUT_FORMS = "X.npy, ark:X.ark or ark,scp:X.ark,X.scp"
_KALDI_OPTIONS = {"scp", "t", "b"}


class EmbeddingOutputError(ValueError):
    """An output specification that cannot be written, or file names that make no usable keys."""


@dataclass(frozen=True)
class EmbeddingOutput:
    """Where and how a set of embeddings is written (see the module's documentation)."""

    spec: str  # as the user wrote it
    kind: str  # "npy" or "ark"
    path: Path  # the .npy or the .ark
    listing: Path | None  # npy: the list of files; ark: the scp (None when not asked)
    text: bool = False  # a text ark

    @classmethod
    def parse(cls, spec: str) -> EmbeddingOutput:
        """Read ``X.npy``, ``ark[,t]:X.ark`` or ``ark[,t],scp:X.ark,X.scp``; raise :class:`EmbeddingOutputError`."""
        spec = str(spec)
        head, colon, rest = spec.partition(":")
        options = head.split(",")
        if colon and options[0] == "ark":
            return cls._kaldi(spec, set(options[1:]), rest)
        if colon and head and os.path.sep not in head and set(options) & ({"ark", "scp"} | _KALDI_OPTIONS):
            raise EmbeddingOutputError(f"{spec!r} is not a Kaldi output this command writes: give {OUT_FORMS}")
        path = Path(spec)
        if path.suffix != ".npy" or not path.stem:
            raise EmbeddingOutputError(f"the output {spec!r} is neither a .npy file nor a Kaldi table: "
                                       f"give {OUT_FORMS}")
        return cls(spec, "npy", path, path.with_name(f"{path.stem}.files.txt"))

    @classmethod
    def _kaldi(cls, spec: str, options: set[str], rest: str) -> EmbeddingOutput:
        unknown = options - _KALDI_OPTIONS
        if unknown:
            raise EmbeddingOutputError(f"{spec!r}: unknown Kaldi option(s) {', '.join(sorted(unknown))}; "
                                       f"this command takes {OUT_FORMS} (with t for a text ark)")
        if "t" in options and "b" in options:
            raise EmbeddingOutputError(f"{spec!r}: a text (t) and a binary (b) ark at once")
        paths = rest.split(",") if "scp" in options else [rest]
        if len(paths) != (2 if "scp" in options else 1) or not all(paths):
            wanted = "ark,scp:X.ark,X.scp (two paths)" if "scp" in options else "ark:X.ark (one path)"
            raise EmbeddingOutputError(f"{spec!r} is not of the form {wanted}")
        if any(path == "-" or path.endswith("|") for path in paths):
            raise EmbeddingOutputError(f"{spec!r}: write to files; standard output and pipes are not supported")
        ark = Path(paths[0])
        scp = Path(paths[1]) if len(paths) == 2 else None
        if scp is not None and os.path.abspath(scp) == os.path.abspath(ark):
            raise EmbeddingOutputError(f"{spec!r}: the ark and the scp are the same file")
        return cls(spec, "ark", ark, scp, "t" in options)

    def keys(self, sources: Sequence[str]) -> list[str] | None:
        """The Kaldi keys of ``sources`` (file name without extension), or None for a .npy output.

        Raises :class:`EmbeddingOutputError` naming the files when two give the same
        key or a name has whitespace.
        """
        if self.kind == "npy":
            for source in sources:
                if "\n" in str(source) or "\r" in str(source):
                    raise EmbeddingOutputError(f"the file name {str(source)!r} has a line break, so it cannot be "
                                               f"listed in {self.listing}; rename the file")
            return None
        keys: list[str] = []
        seen: dict[str, str] = {}
        for source in sources:
            key = Path(source).stem
            if not key or any(character.isspace() for character in key):
                raise EmbeddingOutputError(f"{source}: its name makes the key {key!r}, and Kaldi keys cannot be "
                                           f"empty or hold whitespace; rename the file, or write --out X.npy")
            if key in seen and seen[key] == str(source):
                raise EmbeddingOutputError(f"{source} is given twice, and keys in a Kaldi table must be unique: "
                                           "give each file once, or write --out X.npy (rows in argument order)")
            if key in seen:
                raise EmbeddingOutputError(f"{seen[key]} and {source} both give the key {key!r} (the file name "
                                           "without its extension), and keys in a Kaldi table must be unique: "
                                           "rename or link one of them, or write --out X.npy (rows in "
                                           "argument order)")
            seen[key] = str(source)
            keys.append(key)
        return keys

    def written_paths(self) -> list[Path]:
        """The files :meth:`write` makes, the data first."""
        return [self.path] + ([self.listing] if self.listing is not None else [])

    def write(self, sources: Sequence[str], embeddings: np.ndarray) -> dict:
        """Write the ``(N, E)`` ``embeddings`` of ``sources`` (row ``i`` is ``sources[i]``); return a summary.

        Every file is written whole under a temporary name, then renamed into place;
        missing parent folders are made. The summary has ``format``, ``files``,
        ``keys`` (None for .npy), ``written``, ``num_embeddings`` and ``embedding_dim``.
        """
        matrix = np.asarray(embeddings, dtype=np.float32)
        sources = [str(source) for source in sources]
        if matrix.ndim != 2 or matrix.shape[0] != len(sources):
            raise EmbeddingOutputError(f"{len(sources)} files but embeddings of shape {matrix.shape}")
        keys = self.keys(sources)
        contents = self._contents(sources, keys, matrix)
        temporaries: list[Path] = []
        try:
            for path, data in zip(self.written_paths(), contents):
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
                temporaries.append(temporary)
                with open(temporary, "xb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            for temporary, path in zip(temporaries, self.written_paths()):
                os.replace(temporary, path)
        finally:
            for temporary in temporaries:
                temporary.unlink(missing_ok=True)
        kind = self.kind if self.kind == "npy" else ",".join(["ark"] + (["t"] if self.text else [])
                                                             + (["scp"] if self.listing else []))
        return {"format": kind, "files": sources, "keys": keys, "written": [str(p) for p in self.written_paths()],
                "num_embeddings": int(matrix.shape[0]), "embedding_dim": int(matrix.shape[1])}

    def _contents(self, sources: list[str], keys: list[str] | None, matrix: np.ndarray) -> list[bytes]:
        """The bytes of each file of :meth:`written_paths`."""
        if self.kind == "npy":
            buffer = io.BytesIO()
            np.save(buffer, matrix, allow_pickle=False)
            return [buffer.getvalue(), "".join(f"{source}\n" for source in sources).encode("utf-8")]
        import kaldiio

        ark, offsets = io.BytesIO(), []
        for key, row in zip(keys, matrix):
            offsets.append(ark.tell() + len(f"{key} ".encode("utf-8")))  # where the vector starts, as scp files say
            kaldiio.save_ark(ark, {key: row}, text=self.text)
        if self.listing is None:
            return [ark.getvalue()]
        scp_text = "".join(f"{key} {self.path}:{offset}\n" for key, offset in zip(keys, offsets))
        return [ark.getvalue(), scp_text.encode("utf-8")]
