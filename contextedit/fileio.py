"""Atomic writes, safetensors-only loading and run-folder path safety.

Every file or folder the tool writes goes to a temporary name in the destination folder and is
renamed into place (:func:`atomic_path`, :func:`atomic_folder`), so an interrupted run never
leaves a partial file behind. An exclusive write (an
output written without --overwrite) is moved into place only if its name is still free, so it
never replaces what another command wrote there meanwhile.

Temporary names carry the writer's process id and host (:func:`temp_name`), so the next write
into a folder removes the leftovers of a killed process (:func:`sweep_stale`) and never a live
one's. A full disk is one :class:`~.errors.NoSpaceError` that says how much was needed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import hashlib
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import InputError, NoSpaceError, OutputExistsError, UnsafeFileError, UsageError

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def _file_mode() -> int:
    """The mode a plain ``open()`` would give (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()
HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_STALE = re.compile(r"^\..+\.p(\d+)h([0-9a-f]{6})\.[0-9a-f]{8}\..*tmp")


def temp_name(path: Path, suffix: str = ".tmp") -> Path:
    """A fresh hidden name beside ``path`` that says which process on which host made it."""
    return path.with_name(f".{path.name}.p{os.getpid()}h{HOST}.{secrets.token_hex(4)}.{suffix.lstrip('.')}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def sweep_stale(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` left by dead processes of this host (a SIGKILL'd run's);
    another host's, or a live process's, are left alone."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _STALE.match(entry.name)
            if m and m.group(2) == HOST and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    _remove(Path(entry.path))
                    removed.append(Path(entry.path))
    return removed


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing ancestor)."""
    path = Path(path).absolute()
    path = next(p for p in (path, *path.parents) if p.exists())
    dev = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, however a library wrapped it (safetensors: "os error 28")."""
    return (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc) \
        or "os error 28" in str(exc)


def no_space(path: Path, need_bytes: int | None) -> NoSpaceError:
    need = f" (needs about {max(1, round(need_bytes / 2**20))} MB)" if need_bytes else ""
    return NoSpaceError(f"no space left on {mount_point(path)}{need} while writing {path}; "
                        "free some space there or choose another `out`")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if need be), across processes."""
    ensure_writable_dir(Path(path).parent)
    with open(path, "a+b") as fh:
        if os.name == "nt":
            import msvcrt

            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if os.name != "nt":
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, *, exclusive: bool = False,
                need_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    ``exclusive``: never replace ``path`` (OutputExistsError if it exists by then, see :func:`move_new`).
    ``need_bytes``: the size expected, for the message when the disk fills.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    sweep_stale(path.parent)
    tmp_path = temp_name(path, suffix or path.suffix.lstrip(".") + ".tmp")
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, FILE_MODE)
        if exclusive:
            move_new(tmp_path, path)
        else:
            os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, NoSpaceError):
            raise no_space(path, need_bytes) from exc
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, exclusive: bool = False) -> Iterator[Path]:
    """Yield a new empty folder beside ``path``; on success it takes ``path``'s place, whole.

    Without ``exclusive`` an existing ``path`` is replaced (the old one is removed only after the
    new one is in place). ``exclusive``: never replace ``path`` (OutputExistsError if it exists,
    now or by the end, see :func:`move_new`). On any error the temporary folder is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    if exclusive and (path.exists() or path.is_symlink()):
        raise OutputExistsError(f"{path} already exists; pass `overwrite` to replace it or choose another `out`")
    sweep_stale(path.parent)
    tmp = temp_name(path)
    tmp.mkdir()  # unlike mkdtemp (0700) this honours the umask, so the result is shareable
    try:
        yield tmp
        if exclusive:
            move_new(tmp, path)
        elif path.exists() or path.is_symlink():
            old = tmp.with_name(f"{tmp.name}.old")
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)  # put the old one back: never neither
                raise
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc) and not isinstance(exc, NoSpaceError):
            raise no_space(path, None) from exc
        raise


def _remove(path: Path) -> None:
    """Delete a file, link or folder tree."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def move_new(src: Path, dst: Path) -> None:
    """Rename the file or folder ``src`` to ``dst`` only if nothing is at ``dst``, atomically.

    A plain rename would replace a file (or, on POSIX, an empty folder) that another command put
    at ``dst`` after this one checked; here that is an OutputExistsError and ``dst`` is left alone.
    """
    src, dst = Path(src), Path(dst)
    try:
        if not src.is_dir():
            _link_new(src, dst)
        elif os.name == "nt":
            os.rename(src, dst)  # Windows never renames onto an existing name
        else:
            os.mkdir(dst)  # POSIX rename replaces an empty folder: claim the name first, atomically
            try:
                os.rename(src, dst)  # onto our own claim; fails if someone wrote into it meanwhile
            except OSError:
                with contextlib.suppress(OSError):
                    os.rmdir(dst)  # only if still empty: never someone else's files
                raise
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise OutputExistsError(f"{dst} appeared while this command ran (another command wrote it) and was kept; "
                                    "pass `overwrite` to replace it or choose another `out`") from None
        raise


def _link_new(src: Path, dst: Path) -> None:
    """Move a file to a free name: a hard link fails where ``dst`` exists (os.replace would not)."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (FAT, some network mounts): claim the name, then replace the claim
        os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        try:
            os.replace(src, dst)
        except BaseException:
            with contextlib.suppress(OSError):
                if os.path.getsize(dst) == 0:  # still our empty claim
                    os.unlink(dst)
            raise
        return
    os.unlink(src)


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and parents) or raise a UsageError saying it is not writable."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {folder}: {exc.strerror}; choose a writable `out`") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {folder} is not writable; choose a writable `out`")
    return folder


def check_writable_dir(folder: str | os.PathLike) -> Path:
    """Refuse, before any work and without creating anything, a folder that could not be written.

    The nearest existing ancestor must be a writable folder (not, say, a regular file).
    """
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"cannot write to {folder}: {existing} is a file, not a folder; choose another `out`")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to {folder}: {existing} is not writable; choose a writable `out`")
    return folder


def write_json(path: str | os.PathLike, data: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{what} {path} is not valid JSON ({exc}); regenerate it") from exc


def refuse_pickle(path: str | os.PathLike) -> None:
    suffix = Path(path).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        raise UnsafeFileError(
            f"{path} is a pickle-based weight file ({suffix}); only .safetensors files are loaded — "
            "convert it with safetensors first"
        )


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    need = sum(t.numel() * t.element_size() for t in tensors.values())
    with atomic_path(path, need_bytes=need) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; pickle files, missing and truncated files become InputErrors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    refuse_pickle(path)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path} is not a valid safetensors file ({exc}); it may be truncated — re-create it") from exc


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path} is not a valid safetensors file ({exc}); it may be truncated — re-create it") from exc


def inside(root: str | os.PathLike, relative: str) -> Path:
    """Resolve ``relative`` under ``root``; refuse paths that escape it (manifests are untrusted)."""
    root = Path(root).resolve()
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise UnsafeFileError(f"path {relative!r} in {root} points outside its folder; the manifest was tampered with")
    return target
