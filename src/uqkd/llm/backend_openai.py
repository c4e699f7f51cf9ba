"""Teacher backend for any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, ``transformers serve``, ...).

Spec: ``openai:http://HOST:PORT/v1#MODEL``; the part before ``#`` is the API base URL (the one
``/chat/completions`` and ``/models`` hang off), the part after it the served model name. The
API key comes from ``$UQKD_OPENAI_API_KEY`` or ``$OPENAI_API_KEY`` (optional: a server on your own
machine usually needs none; the placeholder ``EMPTY`` is sent then, as vLLM's docs do). Requests go
through the official ``openai`` client (``openai.OpenAI``: its retries, timeouts and typed errors),
one shared client used from a thread pool.

One request per sequence, ``messages=[{"role": "user", "content": question}]``, so that every
sample has a seed of its own:

- sampling: ``temperature``, ``top_p``, ``max_tokens`` (= ``max_new_tokens``) and ``seed`` (the
  row seed reduced to 31 bits, ``row_seed % (2**31 - 1)``);
- greedy (``row_seeds`` None or ``do_sample`` False): ``temperature = 0``, no seed;
- ``top_k`` and ``repetition_penalty`` are not in the OpenAI schema and are **best effort**.
  ``sampling_fields="auto"`` (the default) first sends them as extra top-level fields (vLLM and
  SGLang honour them; llama.cpp honours ``top_k``, ``top_k=0`` is sent as ``-1``, "disabled"). A
  server that rejects them (HTTP 400/422 naming the field, e.g. ``transformers serve``) is asked
  again with ``generation_config``, the JSON string of generation settings ``transformers serve``
  takes (``{"do_sample": ..., "top_k": ..., "repetition_penalty": ...}``), and one that rejects that
  too gets the standard fields only (a warning says so). The mode found is kept in
  :attr:`OpenAIBackend.sampling_fields`; pass ``"extra"``, ``"generation_config"`` or
  ``"standard"`` to fix it.

Why ``generation_config`` matters for ``transformers serve`` (5.x): it takes ``do_sample`` from the
model's ``generation_config.json`` and a request's ``temperature`` only ever turns sampling *off*
(at 0). A model whose generation config lacks ``do_sample: true`` (the de-quantised SmolLM2 GGUF,
for one) is then decoded greedily whatever the temperature and seed: every "sample" is the same
answer. Sending ``generation_config={"do_sample": true}`` makes it sample, and it then honours
``seed`` (it seeds torch before each request, one request at a time; not with
``--continuous-batching``, where requests share the random stream).

Whether a server honours ``seed`` is up to the server: vLLM and ``transformers serve`` do,
OpenAI's own API only tries. Token counts come from ``usage.completion_tokens``; a response without
usage falls back to a whitespace word count of the answer. Answers are returned raw (the caller
cleans them).

Requests run on a thread pool (``concurrency``, default 8) sharing one ``openai.OpenAI`` client
(its HTTP connection pool is thread-safe). The client retries HTTP 408, 409, 429, 5xx, timeouts and
dropped connections ``max_retries`` times; the delay is uqkd's ``backoff * 2**attempt`` seconds, or
the server's ``Retry-After`` (at most 60 s). The client's typed errors (``openai.RateLimitError``,
``APIStatusError``, ``APITimeoutError``, ``APIConnectionError``) become one-line
:class:`~uqkd.config.UserError` s: server unreachable (naming the URL), unknown model (naming it and
listing the server's models from ``GET /models``), rate limit still hit after the retries, a
request timeout, a malformed response (the body is read raw and checked here, so a server that
answers oddly gets a precise message). Proxies from the environment are ignored for a server on
this machine (localhost, 127.0.0.1, ::1).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import os
import threading
import time
import urllib.parse
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..config import UserError

__all__ = ["OpenAIBackend", "parse_openai_spec", "SPEC_FORM"]

SPEC_FORM = "openai:http://HOST:PORT/v1#MODEL"
_MODES = ("extra", "generation_config", "standard")
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_log = logging.getLogger(__name__)


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """``(base_url, model)`` of ``openai:http://HOST:PORT/v1#MODEL``; ``UserError`` for anything else.

    >>> parse_openai_spec("openai:http://127.0.0.1:8000/v1/#my-model")
    ('http://127.0.0.1:8000/v1', 'my-model')
    """

    def bad(why: str) -> UserError:
        return UserError(f"teacher {spec!r}: {why}; expected {SPEC_FORM} (e.g. openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-0.5B-Instruct)")

    if not isinstance(spec, str) or not spec.startswith("openai:"):
        raise bad("not an openai: spec")
    url, sep, model = spec[len("openai:"):].partition("#")
    url, model = url.strip(), model.strip()
    if not sep or not model:
        raise bad("no model name after '#'")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise bad(f"bad URL {url!r} ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise bad(f"the URL {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise bad(f"no host in the URL {url!r}")
    if parts.query:
        raise bad(f"the URL {url!r} has a query string")
    if parts.path.strip("/") == "":
        raise bad(f"the URL {url!r} has no API base path (usually /v1)")
    del port
    return url.rstrip("/"), model


def _one_line(text: str, limit: int = 300) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 3] + "..."


def _error_text(payload: Any, raw: str) -> str:
    """The server's error message from the usual JSON shapes (OpenAI, vLLM, FastAPI), else the raw body."""
    if isinstance(payload, dict):
        for key in ("error", "detail", "message"):
            v = payload.get(key)
            if isinstance(v, dict):
                v = v.get("message") or v.get("msg") or json.dumps(v)
            elif isinstance(v, list):  # FastAPI validation errors
                v = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in v)
            if v:
                return _one_line(v)
    return _one_line(raw) or "(empty body)"


def _make_client(base_url: str, api_key: str | None, timeout: float, max_retries: int, backoff: float) -> Any:
    """An ``openai.OpenAI`` client for ``base_url`` whose retry delay is ``backoff * 2**attempt`` (or Retry-After)."""
    try:
        import openai
    except ImportError:
        raise UserError("teacher openai:...: the openai package is not installed; pip install openai") from None

    class _Client(openai.OpenAI):
        def _calculate_retry_timeout(self, remaining_retries: int, options: Any, response_headers: Any = None) -> float:
            ra = response_headers.get("retry-after") if response_headers is not None else None
            if ra is not None:
                try:
                    wait = float(ra)
                except ValueError:
                    parsed = email.utils.parsedate_tz(ra)
                    wait = email.utils.mktime_tz(parsed) - time.time() if parsed else float("nan")
                if math.isfinite(wait) and wait >= 0:
                    return min(wait, 60.0)
            attempt = max(options.get_max_retries(self.max_retries) - remaining_retries, 0)
            return backoff * (2.0 ** min(attempt, 30))

    host = urllib.parse.urlsplit(base_url).hostname or ""
    http = openai.DefaultHttpxClient(trust_env=host not in _LOOPBACK)  # no proxy for this machine
    return _Client(api_key=api_key or "EMPTY", base_url=base_url, timeout=timeout, max_retries=max_retries,
                   http_client=http)


class _Response:
    __slots__ = ("status", "payload", "raw", "headers")

    def __init__(self, status: int, raw: str, headers: Any) -> None:
        self.status, self.raw, self.headers = status, raw, headers
        try:
            self.payload = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            self.payload = None

    @property
    def message(self) -> str:
        return _error_text(self.payload, self.raw)


class OpenAIBackend:
    """A teacher behind an OpenAI-compatible ``/chat/completions`` endpoint (see the module docstring).

    Parameters
    ----------
    base_url : str
        API base, e.g. ``http://127.0.0.1:8000/v1``.
    model : str
        Model name as the server knows it (``"model"`` of each request).
    api_key : str, optional
        Bearer token; default ``$UQKD_OPENAI_API_KEY`` or ``$OPENAI_API_KEY``, else none.
    concurrency : int
        Requests in flight at once (threads).
    max_retries : int
        Retries of a request (the openai client's ``max_retries``) after HTTP 408, 409, 429, 5xx, a
        timeout or a dropped connection; a refused connection at the start is not retried.
    timeout : float
        Seconds to wait for one answer (the client's ``timeout``); still timing out after the
        retries, a ``UserError`` says to raise it or lower the concurrency.
    backoff : float
        First back-off delay in seconds (doubled on each retry).
    sampling_fields : {"auto", "extra", "generation_config", "standard"}
        How ``top_k`` and ``repetition_penalty`` are sent (module docstring).
    revision : str, optional
        Your own version tag of the served weights, added to :attr:`name` (servers seldom
        report one: change it, or the model name, when the weights change).
    probe : bool
        ``GET /models`` now: an unreachable server fails here, and what the server reports
        about the model (``root``, ``revision``) goes into :attr:`name`.

    Attributes
    ----------
    name : str
        ``openai:BASE_URL#MODEL``, then ``|root=...``, ``|revision=...`` as reported by the
        server's model list, and ``|rev=REVISION`` when given: the sample-cache identity.
    kind : str
        ``"openai"``.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 120.0,
        backoff: float = 0.5,
        sampling_fields: str = "auto",
        revision: str | None = None,
        probe: bool = True,
    ) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise UserError(f"concurrency: expected an integer >= 1, got {concurrency!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise UserError(f"max_retries: expected an integer >= 0, got {max_retries!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise UserError(f"timeout: expected a number of seconds > 0, got {timeout!r}")
        if not (isinstance(backoff, (int, float)) and backoff >= 0):
            raise UserError(f"backoff: expected a number of seconds >= 0, got {backoff!r}")
        if sampling_fields not in ("auto", *_MODES):
            raise UserError(f"sampling_fields: expected one of auto, {', '.join(_MODES)}; got {sampling_fields!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key if api_key is not None else (
            os.environ.get("UQKD_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or None)
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self._auto = sampling_fields == "auto"
        self.sampling_fields: str | None = None if self._auto else sampling_fields
        self._lock = threading.Lock()
        self._client = _make_client(self.base_url, self.api_key, self.timeout, self.max_retries, self.backoff)
        self._models: list[dict[str, Any]] | None = None
        self.model_info: dict[str, Any] = {}
        name = f"openai:{self.base_url}#{model}"
        if probe:
            self._models = self._fetch_models(strict=True)
            info = next((m for m in self._models or [] if isinstance(m, dict) and m.get("id") == model), None)
            if info:
                self.model_info = info
                for key in ("root", "revision"):
                    v = info.get(key)
                    if isinstance(v, str) and v and v != model:
                        name += f"|{key}={v}"
        if revision:
            name += f"|rev={revision}"
        self.name = name

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> OpenAIBackend:
        """The backend for ``openai:http://HOST:PORT/v1#MODEL`` (keyword arguments as for the class)."""
        base_url, model = parse_openai_spec(spec)
        try:
            return cls(base_url, model, **kwargs)
        except TypeError as exc:  # an option this backend does not take
            raise UserError(f"teacher {spec!r}: {exc}") from None

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.name!r})"

    # ----- HTTP -----

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _unreachable(self, exc: BaseException) -> UserError:
        reason = exc.__cause__ or exc
        return UserError(
            f"cannot reach the OpenAI-compatible server at {self.base_url} ({_one_line(reason, 120)}); "
            f"is it running? (teacher {SPEC_FORM})")

    def _call(self, path: str, send: Any, retries: int | None = None) -> _Response:
        """One request through the openai client (its retries); the raw response, or ``UserError`` once out of
        retries (rate limit, server error, timeout, unreachable). Other HTTP errors come back as a response."""
        import openai

        client = self._client if retries is None else self._client.with_options(max_retries=retries)
        n = self.max_retries if retries is None else retries
        try:
            raw = send(client).http_response
        except openai.APITimeoutError:
            raise UserError(
                f"no answer from {self._url(path)} within {self.timeout:g} s (timeout, after {n} retries); the server "
                f"may be overloaded: lower the concurrency ({self.concurrency}) or raise the timeout") from None
        except openai.APIConnectionError as exc:
            # httpx's (or httpx2's) ConnectError: refused, no route, unknown host
            if any(c.__name__ == "ConnectError" for c in type(exc.__cause__).__mro__):
                raise self._unreachable(exc) from None
            raise UserError(f"{self._url(path)}: connection dropped ({_one_line(exc.__cause__ or exc, 120)}), "
                            f"still after {n} retries") from None
        except openai.APIStatusError as exc:
            resp = _Response(exc.status_code, exc.response.text, exc.response.headers)
            if isinstance(exc, openai.RateLimitError):
                raise UserError(f"rate limit at {self.base_url}: still HTTP 429 after {n} retries "
                                f"({resp.message}); lower the concurrency ({self.concurrency}) or try later") from None
            if exc.status_code >= 500:
                raise UserError(f"server error at {self._url(path)} after {n} retries: "
                                f"HTTP {resp.status}: {resp.message}") from None
            return resp
        return _Response(raw.status_code, raw.text, raw.headers)

    def _fetch_models(self, strict: bool = False) -> list[dict[str, Any]] | None:
        """``GET /models`` (``data`` list), or None when the server has no such endpoint or answers oddly.

        ``strict``: an unreachable server or a refused API key is a ``UserError``. A refused connection is not
        retried (the server is not there); a busy server is.
        """
        timeout = min(self.timeout, 30.0)

        def send(c: Any) -> Any:
            return c.with_options(timeout=timeout).models.with_raw_response.list()

        try:
            try:
                resp = self._call("models", send, retries=0)
            except UserError as e:
                if str(e).startswith("cannot reach"):
                    raise
                resp = self._call("models", send)
        except UserError:
            if strict:
                raise
            return None
        if resp.status in (401, 403) and strict:
            raise UserError(f"the server at {self.base_url} refused the API key (HTTP {resp.status}: {resp.message}); "
                            "set $UQKD_OPENAI_API_KEY (or $OPENAI_API_KEY)")
        if resp.status != 200 or not isinstance(resp.payload, dict) or not isinstance(resp.payload.get("data"), list):
            return None
        return resp.payload["data"]

    def served_models(self) -> list[str] | None:
        """Model ids from the server's ``GET /models`` (None when it does not say)."""
        if self._models is None:
            self._models = self._fetch_models()
        if self._models is None:
            return None
        return [str(m.get("id")) for m in self._models if isinstance(m, dict) and m.get("id") is not None]

    # ----- requests -----

    def _body(self, question: str, seed: int | None, dec: Any, mode: str) -> dict[str, Any]:
        """Keyword arguments of ``chat.completions.create``: the standard fields, the rest in ``extra_body``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": int(dec.max_new_tokens),
            "stream": False,
        }
        extra: dict[str, Any] = {}
        rp = float(dec.repetition_penalty)
        if seed is None:
            body["temperature"] = 0.0
            gen: dict[str, Any] = {"do_sample": False}
        else:
            body["temperature"] = float(dec.temperature)
            body["top_p"] = float(dec.top_p)
            body["seed"] = int(seed) % (2 ** 31 - 1)
            gen = {"do_sample": True, "top_k": int(dec.top_k)}
        if mode == "extra":
            if seed is not None:
                extra["top_k"] = int(dec.top_k) if dec.top_k > 0 else -1
            extra["repetition_penalty"] = rp
        elif mode == "generation_config":
            gen["repetition_penalty"] = rp
            extra["generation_config"] = json.dumps(gen)
        if extra:
            body["extra_body"] = extra
        return body

    def _rejected(self, resp: _Response, mode: str) -> bool:
        """Whether the server turned the request down for the non-standard fields of ``mode``."""
        if resp.status not in (400, 422):
            return False
        fields = ("top_k", "repetition_penalty") if mode == "extra" else ("generation_config",)
        return any(f in resp.raw for f in fields)

    def _unknown_model(self, resp: _Response) -> bool:
        msg = resp.raw
        code = ""
        if isinstance(resp.payload, dict) and isinstance(resp.payload.get("error"), dict):
            code = str(resp.payload["error"].get("code") or "")
        if code == "model_not_found":
            return True
        if resp.status == 404 and "model" in msg.lower():
            return True
        if resp.status not in (400, 404, 422) or self.model not in msg:
            return False
        low = msg.lower()  # e.g. "The model `x` does not exist", "Server is pinned to 'y'; requested 'x'"
        return any(w in low for w in ("not exist", "does not", "not found", "unknown", "pinned", "not served",
                                      "no such", "invalid model", "not available"))

    def _error(self, resp: _Response) -> UserError:
        url = self._url("chat/completions")
        if self._unknown_model(resp):
            served = self.served_models()
            listing = f"; the server serves: {', '.join(served[:20])}" if served else ""
            return UserError(f"model {self.model!r} is not served by {self.base_url} (HTTP {resp.status}: "
                             f"{resp.message}){listing}; fix the name after '#' in the teacher spec")
        if resp.status in (401, 403):
            return UserError(f"the server at {self.base_url} refused the API key (HTTP {resp.status}: {resp.message}); "
                             "set $UQKD_OPENAI_API_KEY (or $OPENAI_API_KEY)")
        if resp.status == 404:
            return UserError(f"no chat-completions endpoint at {url} (HTTP 404: {resp.message}); the teacher spec's "
                             f"URL must be the API base ({SPEC_FORM})")
        return UserError(f"{url} rejected the request for model {self.model!r} (HTTP {resp.status}: {resp.message})")

    def _mode(self) -> str:
        return self.sampling_fields or _MODES[0]

    def _downgrade(self, mode: str, resp: _Response) -> None:
        with self._lock:
            if self.sampling_fields not in (None, mode):
                return  # another thread got there first
            nxt = _MODES[_MODES.index(mode) + 1]
            self.sampling_fields = nxt
        msg = (f"{self.name}: the server rejected the {mode!r} sampling fields ({resp.message}); "
               f"sending {nxt!r} fields from now on")
        if nxt == "generation_config":  # transformers serve: nothing lost
            _log.info(msg)
        else:
            warnings.warn(msg + "; top_k and repetition_penalty are not applied", RuntimeWarning, stacklevel=4)

    def _complete(self, question: str, seed: int | None, dec: Any) -> tuple[str, int]:
        while True:
            mode = self._mode()
            body = self._body(question, seed, dec, mode)
            resp = self._call("chat/completions", lambda c, b=body: c.chat.completions.with_raw_response.create(**b))
            if resp.status == 200:
                with self._lock:
                    if self.sampling_fields is None:
                        self.sampling_fields = mode
                return self._parse(resp)
            if self._auto and mode != _MODES[-1] and self._rejected(resp, mode):
                self._downgrade(mode, resp)
                continue
            raise self._error(resp)

    def _parse(self, resp: _Response) -> tuple[str, int]:
        p = resp.payload
        where = f"malformed response from {self._url('chat/completions')}"
        if not isinstance(p, dict):
            raise UserError(f"{where}: not a JSON object ({_one_line(resp.raw, 200) or 'empty body'})")
        choices = p.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise UserError(f"{where}: no choices ({_one_line(resp.raw, 200)})")
        msg = choices[0].get("message")
        if not isinstance(msg, dict):
            raise UserError(f"{where}: choices[0] has no message ({_one_line(resp.raw, 200)})")
        text = msg.get("content")
        if text is None:
            text = ""  # e.g. only tool calls or reasoning: an empty answer, counted as such by the caller
        if not isinstance(text, str):
            raise UserError(f"{where}: choices[0].message.content is {type(text).__name__}, expected a string")
        usage = p.get("usage")
        n = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            n = len(text.split())  # documented fallback: words, not tokens
        return text, n

    def generate(self, questions: Sequence[str], row_seeds: Sequence[int] | None, decoding: Any) -> tuple[list[str], list[int]]:
        """Raw answers and completion-token counts, one request per question (see the module docstring)."""
        n = len(questions)
        if row_seeds is not None and len(row_seeds) != n:
            raise ValueError(f"row_seeds: {len(row_seeds)} seeds for {n} questions")
        greedy = row_seeds is None or not getattr(decoding, "do_sample", True)
        seeds: list[int | None] = [None] * n if greedy else [int(s) for s in row_seeds]  # type: ignore[union-attr]
        out: list[tuple[str, int] | None] = [None] * n
        start = 0
        if n and self.sampling_fields is None:  # find out which sampling fields the server takes, once
            out[0] = self._complete(questions[0], seeds[0], decoding)
            start = 1
        rest = range(start, n)
        if len(rest) == 1 or self.concurrency == 1:
            for i in rest:
                out[i] = self._complete(questions[i], seeds[i], decoding)
        elif len(rest):
            pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(rest)), thread_name_prefix="uqkd-openai")
            try:
                futures = {i: pool.submit(self._complete, questions[i], seeds[i], decoding) for i in rest}
                for i, f in futures.items():
                    out[i] = f.result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        texts = [o[0] for o in out]  # type: ignore[index]
        counts = [o[1] for o in out]  # type: ignore[index]
        return texts, counts
