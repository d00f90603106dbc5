"""``/v1/files``: uploads of fine-tuning data, checked as ``lmtune data check`` checks a file.

An upload is written beside its final name, read record by record with the data stage's own
checks, and kept only if every record is usable; otherwise the response names the first bad
line as ``<filename>:<line>: <problem>``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse

from lmtune.errors import UserError
from lmtune.serve.errors import APIError
from lmtune.serve.jobs import shapes
from lmtune.serve.jobs.store import new_id

router = APIRouter()
CHUNK = 1 << 20


def file_object(row: dict) -> dict:
    """A stored file in OpenAI's ``file`` shape."""
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": row["status"],
            "expires_at": None, "status_details": None}


@router.post("/v1/files")
async def upload(request: Request, file: UploadFile = File(...), purpose: str = Form(...)):
    state = request.app.state.lmtune
    if purpose != "fine-tune":
        raise APIError(400, f"purpose {purpose!r} is not supported here; lmtune stores 'fine-tune' files.",
                       "purpose", "invalid_value")
    filename = Path(file.filename or "upload.jsonl").name
    if not filename.endswith(".jsonl"):
        raise APIError(400, f"{filename}: fine-tuning files must be JSONL (one JSON object per line, .jsonl).",
                       "file", "invalid_file_format")
    file_id = new_id("file")
    target = state.files_dir / f"{file_id}.jsonl"
    size, summary = await asyncio.to_thread(_store, file.file, target, filename)
    row = {"id": file_id, "filename": filename, "bytes": size, "created_at": int(time.time()), "purpose": purpose,
           "status": "processed", "path": str(target), "summary": summary}
    state.store.add_file(row)
    return file_object(row)


@router.get("/v1/files")
def list_files(request: Request):
    return {"object": "list", "data": [file_object(r) for r in request.app.state.lmtune.store.files()],
            "has_more": False}


@router.get("/v1/files/{file_id}")
def retrieve_file(file_id: str, request: Request):
    return file_object(_get(request, file_id))


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, request: Request):
    row = _get(request, file_id)
    if not Path(row["path"]).is_file():  # removed from the state directory behind the server's back
        raise APIError(404, f"the stored content of file {file_id!r} is gone from the server's state directory; "
                       "upload it again", param="file_id", code="file_not_found")
    return FileResponse(row["path"], media_type="application/jsonl", filename=row["filename"])


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, request: Request):
    state = request.app.state.lmtune
    row = _get(request, file_id)
    users = [j["id"] for j in state.store.jobs(["queued", "running"])
             if file_id in (j["training_file"], j["validation_file"])]
    if users:
        raise APIError(400, f"{file_id} is used by job {users[0]}, which has not finished; cancel it first.",
                       "file_id", "file_in_use")
    state.store.delete_file(file_id)
    Path(row["path"]).unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}


def _get(request: Request, file_id: str) -> dict:
    row = request.app.state.lmtune.store.file(file_id)
    if row is None:
        raise APIError(404, f"No such File object: {file_id}", "file_id", "file_not_found")
    return row


def _store(source, target: Path, filename: str) -> tuple[int, dict]:
    """Copy the upload beside ``target``, check it, and move it into place; return (bytes, summary)."""
    tmp = target.with_name(f".{target.name}.part.jsonl")
    try:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(source, out, CHUNK)
        summary = _check(tmp, filename)
        size = tmp.stat().st_size
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return size, summary


def _check(path: Path, filename: str) -> dict:
    """``check_file``'s summary; a problem with the data (a UserError) becomes a 400 naming ``filename:line``."""
    from lmtune.data.check import check_file

    shape = shapes.detect(path)  # OpenAI's reinforcement or DPO records: checked as the records they become
    checked = path.with_name(f"{path.name}.converted.jsonl") if shape else path
    try:
        if shape:
            shape.convert(path, checked, filename)
        summary = check_file(checked, task=shape.task if shape else None)
    except UserError as exc:
        where = (exc.source or "").replace(str(checked), filename) or filename
        raise APIError(400, f"{where}: {exc.message}", "file", "invalid_file") from None
    finally:
        if shape:
            checked.unlink(missing_ok=True)
    summary = {k: summary[k] for k in ("records", "format", "task", "labels")}
    return {**summary, "format": shape.format} if shape else summary
