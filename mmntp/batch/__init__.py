"""Durable, resumable batch jobs: JSONL requests in, `results.jsonl` out, exactly once.

The shared core (what the local runner, the Ray backend and the server's BatchService
all use; its API is kept stable):

- `lines`: the input. `check_lines(raw_lines)` / `check_input(path)` is the streamed
  pre-pass that refuses a batch before any work (`BatchRefused`, one line naming the
  line number: not JSON, missing or non-string custom_id, duplicate custom_id with both
  line numbers) and returns `InputCheck(ids={custom_id: line}, sha256)`.
  `read_lines(path)` streams `InputLine(number, custom_id, request)` again;
  `parse_request(request, custom_id)` maps a line's `request` object (the CLI's fields,
  `mmntp.api.fields`) to a `FieldRequest(modality, prompt, output, sampling)`, raising
  `FieldError` naming the field, and gives a request without a seed
  `default_seed(custom_id)`.
- `store`: `BatchStore.open(DIR, Fingerprint(path, sha256), ids)` creates or reopens
  `DIR/batch.sqlite` (WAL); a different input in the same folder is refused. Per id:
  `state` (pending, done, error), `record(custom_id, ok, line)` (first result wins),
  `counts()`, `finished_ids()`, `unwritten()`, `mark_written()`; `get_meta`/`set_meta`
  for anything else a batch needs to keep (a status, a cancel flag).
- `results`: `result_line(custom_id, response=None, error=None)` makes the one JSON line;
  `error_body(code, message, field)` its error; `ResultsWriter(store).repair()` on
  every start, then `.flush()` after recording results, keeps `DIR/results.jsonl` to
  every custom_id exactly once through any kill -9 (results.py says how).
- `responses`: `ResponseCollector(modality)` turns a stream of api chunks (local
  pipeline or SDK) into the response JSON and a media file's bytes; `save_media` writes
  images, audio and motion under `DIR/files/<file_stem(custom_id)>.<ext>`.

The runners: `runner.run_items(backend, items, on_outcome)` runs (custom_id, request)
items concurrently within the backend's window and hands each `Outcome` (result line,
media bytes and path) to `on_outcome`; `runner.LocalBackend(pipe, priority=, owner=)`
runs them on a pipeline's AsyncEngine (a server's batch worker can reuse it with a
priority below interactive work), `RemoteBackend` through the SDK's AsyncClient;
`runner.run_batch` is `mmntp batch run` (`Recorder` records each outcome: file, store,
results.jsonl). `ray_backend.run_batch_ray` is `--backend ray` (Ray Data `map_batches`
over an actor pool, the driver recording).
"""
