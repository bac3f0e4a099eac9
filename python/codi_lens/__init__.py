"""codi_lens from Python: the header's engine through ctypes, with numpy views of its buffers.

Needs only the Python standard library and numpy, plus build/libcodi_lens.so (`make python`):

    import codi_lens as cl
    m = cl.Model("models/codi-nano/codi_nano.bin")             # the CLI's --model and its options
    a = m.run("Tom has 3 bags with 4 apples each. How many apples?")
    a.text, a.number, a.latents                                 # answer, its number, z_1..z_(N+1)
    many = m.run_many(questions, batch=16)                       # batched (codi_batch_*), in order
    t = m.trace(question="...")                                 # the tensors `codi trace` writes
    tensors, meta = cl.read_safetensors("trace.safetensors")     # any of our files, bf16 widened

Every buffer of a State is a numpy array over the C memory (no copy): resid [L+1, T, D],
key_cache / value_cache [L, KVH, T, HD], logits [V], final_hidden [D]. They are writable (the C
API lets a caller write them) and raise FreedError once the state is freed; the memory itself is
returned when the last view is gone, so a stale view can never read freed memory. Hooks are
Python functions fn(info, x) called at the points they ask for with a writable view x that is
valid during the call only. Errors are exceptions carrying the library's message; an exception
raised inside a hook stops the run and comes out of the call that ran it.
"""
import contextlib
import ctypes
import json
import math
import os
import tempfile
from collections import namedtuple
from ctypes import byref, c_double, c_float, c_void_p

import numpy as np

from . import _lib
from ._lib import LIBRARY_PATH, VERSION, lib
from .files import (SafetensorsError, bf16_to_float32, float32_to_bf16, read_csv, read_jsonl, read_safetensors,
                    spec_arrays_to_files, spec_has_arrays, write_safetensors, write_steer_spec)

__all__ = ["Model", "State", "Tokenizer", "Steer", "TunedLens", "Probe", "PCA", "Answer", "HookInfo", "hook",
           "CodiError", "FreedError", "CArray", "read_safetensors", "write_safetensors", "read_jsonl", "read_csv",
           "write_steer_spec", "bf16_to_float32", "float32_to_bf16", "SafetensorsError", "train_tuned_lens", "tuned_lens_eval",
           "save_probes", "save_pcas", "read_safetensors_c", "softmax", "log_softmax", "entropy", "kl", "top_k",
           "rank_of", "kernel_name", "set_kernel", "kernels_available", "POINTS", "PHASES", "VERSION", "LIBRARY_PATH"]

POINTS = ("embed", "resid", "key", "value", "attn_out", "mlp_out", "final")   # CODI_HOOK_* in order
PHASES = ("prefill", "latent", "answer")                                       # CODI_PHASE_*
_ALL = -1                                                                      # CODI_ALL


class CodiError(RuntimeError):
    """A call into the library failed; the message is the library's."""


class FreedError(CodiError):
    """A view of C memory was used after its owner (state, model, hook call) was gone."""


def _errbuf():
    return ctypes.create_string_buffer(1024)


def _text(buf):
    return buf.value.decode("utf-8", "replace")


def _path(p):
    return os.fsencode(p)


# ---- views of C memory ----------------------------------------------------------------------

class _Owner:
    """Owns one C object: frees it when the last reference (the Python object, a view's buffer) goes.
    `alive` turns False at an explicit free, and every view then raises."""

    def __init__(self, ptr, free_fn, what, keep=()):
        self.ptr, self.free_fn, self.what, self.alive = ptr, free_fn, what, True
        self.keep = list(keep)      # what the C object points to (callbacks, filters) or needs (the model)

    def check(self):
        if not self.alive:
            raise FreedError("%s was freed" % self.what)
        return self.ptr

    def __del__(self):
        if self.ptr and self.free_fn:
            self.free_fn(self.ptr)
        self.ptr = None


def _release(obj, what):
    """Drops obj's owner: views raise from now on, and the C object is freed once no view holds it."""
    obj._o.alive = False
    obj._o = _Owner(None, None, what)
    obj._o.alive = False


class _Token:
    __slots__ = ("alive", "what")

    def __init__(self, what):
        self.alive, self.what = True, what

    def check(self):
        if not self.alive:
            raise FreedError("%s is gone" % self.what)


class CArray(np.ndarray):
    """A numpy array over memory the C library owns. Indexing, arithmetic, numpy functions, repr and
    copy raise FreedError once the owner is gone; .copy() and results of arithmetic are plain arrays."""

    def __array_finalize__(self, obj):
        self._owner = getattr(obj, "_owner", None)

    def _check(self):
        if self._owner is not None:
            self._owner.check()

    def __getitem__(self, k):
        self._check()
        return super().__getitem__(k)

    def __setitem__(self, k, v):
        self._check()
        super().__setitem__(k, v)

    def __iter__(self):
        self._check()
        return super().__iter__()

    def __repr__(self):
        self._check()
        return repr(self.view(np.ndarray))

    def __str__(self):
        self._check()
        return str(self.view(np.ndarray))

    def __array__(self, dtype=None, *args, **kw):
        self._check()
        a = self.view(np.ndarray)
        return a if dtype is None else a.astype(dtype)

    def __reduce__(self):
        self._check()
        return self.copy().__reduce__()

    def copy(self, order="C"):
        self._check()
        return np.ndarray.copy(self.view(np.ndarray), order)

    def tolist(self):
        self._check()
        return self.view(np.ndarray).tolist()

    def tobytes(self, order="C"):
        self._check()
        return self.view(np.ndarray).tobytes(order)

    def item(self, *args):
        self._check()
        return self.view(np.ndarray).item(*args)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kw):
        args = []
        for x in inputs:
            if isinstance(x, CArray):
                x._check()
                x = x.view(np.ndarray)
            args.append(x)
        if out is not None:
            for o in out:
                if isinstance(o, CArray):
                    o._check()
            kw["out"] = tuple(o.view(np.ndarray) if isinstance(o, CArray) else o for o in out)
        result = getattr(ufunc, method)(*args, **kw)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return result

    def __array_function__(self, func, types, args, kwargs):
        self._check()
        return super().__array_function__(func, types, args, kwargs)


def _view(addr, shape, owner, keep, dtype=np.float32, ctype=c_float):
    """A CArray of shape over C memory at addr; `keep` stays referenced while the array lives."""
    n = math.prod(shape)
    buf = (ctype * n).from_address(addr)
    buf._keep = keep
    a = np.frombuffer(buf, dtype=dtype).reshape(shape).view(CArray)
    a._owner = owner
    return a


# ---- argument checks ------------------------------------------------------------------------

def _floats(x, what, shape=None):
    """x as a C-contiguous float32 array (copied when it is not one); TypeError for non-floats,
    ValueError for a wrong shape."""
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise TypeError("%s: needs a float array, not %s" % (what, a.dtype))
    a = np.ascontiguousarray(a, dtype=np.float32)
    if shape is not None and a.shape != tuple(shape):
        raise ValueError("%s: shape %s, expected %s" % (what, a.shape, tuple(shape)))
    return a


def _ids(x, vocab, what):
    a = np.asarray(x)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.size == 0:
        raise ValueError("%s: needs a non-empty 1-D list of ids, got shape %s" % (what, a.shape))
    if a.dtype.kind not in "iu":
        raise TypeError("%s: needs integer token ids, not %s" % (what, a.dtype))
    if a.ndim != 1:
        raise ValueError("%s: needs a non-empty 1-D list of ids, got shape %s" % (what, a.shape))
    bad = np.nonzero((a < 0) | (a >= vocab))[0]
    if bad.size:
        raise ValueError("%s: id %d at index %d is out of range [0, %d)" % (what, int(a[bad[0]]), int(bad[0]), vocab))
    return np.ascontiguousarray(a, dtype=np.int32)


def _int(v, what, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError("%s: needs an int, not %r" % (what, v))
    if not lo <= v <= hi:
        raise ValueError("%s: %d is out of range [%d, %d]" % (what, v, lo, hi))
    return int(v)


def _ptr(a):
    return a.ctypes.data if a is not None else None


# ---- tokenizer ------------------------------------------------------------------------------

class Tokenizer:
    """A tokenizer.json (or a directory holding one) or a tiktoken tokenizer.model. With a model,
    its pad / bot / eot ids get the research tokenizer's names where the tokenizer has none."""

    def __init__(self, path, model=None):
        err = _errbuf()
        ptr = lib.codi_tokenizer_load(_path(path), err, len(err))
        if not ptr:
            raise CodiError("tokenizer %s: %s" % (path, _text(err)))
        self._o = _Owner(ptr, lib.codi_tokenizer_free, "the tokenizer")
        self.path = str(path)
        if model is not None and lib.codi_tokenizer_add_codi_tokens(model._o.check(), ptr, err, len(err)):
            raise CodiError("tokenizer %s: %s" % (path, _text(err)))

    @property
    def _p(self):
        return self._o.check()

    @property
    def n_ids(self):
        return _lib.TokenizerStruct.from_address(self._p).n_ids

    @property
    def bos_id(self):
        return _lib.TokenizerStruct.from_address(self._p).bos_id

    def encode(self, text, add_bos=False, parse_special=True):
        """text -> int32 ids, as Hugging Face's encode(text, add_special_tokens=add_bos)."""
        b = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        p = self._p
        n = lib.codi_encode(p, b, len(b), int(add_bos), int(parse_special), None, 0)
        if n < 0:
            raise CodiError("encode: out of memory, or add_bos without a known BOS")
        ids = np.zeros(n, dtype=np.int32)
        lib.codi_encode(p, b, len(b), int(add_bos), int(parse_special), _ptr(ids), n)
        return ids

    def decode(self, ids, skip_special=True):
        """ids -> text, as Hugging Face's decode (invalid UTF-8 -> U+FFFD)."""
        a = _ids(ids, self.n_ids, "decode") if np.size(ids) else np.zeros(0, np.int32)
        p = self._p
        need = lib.codi_decode(p, _ptr(a), a.size, int(skip_special), None, 0)
        if need < 0:
            raise CodiError("decode: an id is out of range")
        out = ctypes.create_string_buffer(need + 1)
        lib.codi_decode(p, _ptr(a), a.size, int(skip_special), out, need + 1)
        return out.raw[:need].decode("utf-8", "replace")

    def token_text(self, id):
        """A token for display: \\n, \\t escaped, bytes that are not whole characters as \\xNN."""
        out = ctypes.create_string_buffer(1024)
        n = lib.codi_token_text(self._p, int(id), out, len(out))
        if n < 0:
            raise ValueError("token_text: id %r is out of range" % (id,))
        if n >= len(out):
            out = ctypes.create_string_buffer(n + 1)
            lib.codi_token_text(self._p, int(id), out, n + 1)
        return out.raw[:n].decode("utf-8", "replace")

    def token_id(self, text):
        """The id of a token given by its exact text (vocabulary or added), or None."""
        b = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        i = lib.codi_token_id(self._p, b, len(b))
        return None if i < 0 else i

    def number_tokens(self, value):
        """The ids that count as "the number value appears" (codi_number_tokens)."""
        ids = np.zeros(2, dtype=np.int32)
        n = _lib.lib.codi_number_tokens(self._p, float(value), _ptr(ids))
        if n < 0:
            raise ValueError("number_tokens: %r is not an integer in [0, 1e15)" % (value,))
        return [int(i) for i in ids[:n]]

    def free(self):
        _release(self, "the tokenizer")


# ---- hooks ----------------------------------------------------------------------------------

HookInfo = namedtuple("HookInfo", "point layer pos phase step")
HookInfo.__doc__ = "Where a hook is called: point name, layer (-1: embed), absolute position, phase name, step."

_HookSpec = namedtuple("_HookSpec", "fn at layer phase step")


def hook(fn, at=None, layer=None, phase=None, step=None):
    """A hook for Model.run / trace (hooks=[...]) or State.add_hook: fn(info, x) at the points named
    in `at` (a name of POINTS or a list of them; None: every point), only at `layer`, `phase` (a name
    of PHASES) and `step` when given. x is a writable float32 view, valid during the call only."""
    return _HookSpec(fn, at, layer, phase, step)


def _filter(spec, n_layers):
    at = spec.at if spec.at is not None else POINTS
    at = (at,) if isinstance(at, str) else tuple(at)
    mask = 0
    for a in at:
        if a not in POINTS:
            raise ValueError("hook: at %r is not one of %s" % (a, ", ".join(POINTS)))
        mask |= 1 << POINTS.index(a)
    if spec.phase is not None and spec.phase not in PHASES:
        raise ValueError("hook: phase %r is not one of %s" % (spec.phase, ", ".join(PHASES)))
    layer = _ALL if spec.layer is None else _int(spec.layer, "hook layer", -1, n_layers)
    step = _ALL if spec.step is None else _int(spec.step, "hook step", 0, 1 << 30)
    return mask, layer, _ALL if spec.phase is None else PHASES.index(spec.phase), step


def _hook_filter(spec, n_layers, errors, keep):
    """A Python hook as the shim's filtered C hook: (filter struct, ctypes callback), both to be kept
    alive while installed (pass byref(filter) as the hook's user with FILTERED_HOOK). An exception in
    spec.fn goes to errors and stops the pass; keep stays referenced by the views given to fn."""
    if not callable(spec.fn):
        raise TypeError("hook: fn must be callable")
    mask, lay, ph, st = _filter(spec, n_layers)
    user_fn = spec.fn

    def trampoline(_user, info_addr, data_addr):
        try:
            info = _lib.HookInfo.from_address(info_addr)
            token = _Token("the view given to a hook (it is valid during the call only)")
            x = _view(data_addr, (info.size,), token, keep)
            try:
                user_fn(HookInfo(POINTS[info.point], info.layer, info.pos, PHASES[info.phase], info.step), x)
            finally:
                token.alive = False
            return 0
        except BaseException as e:   # noqa: B902 - anything (KeyboardInterrupt too) stops the run cleanly
            errors.append(e)
            return 1

    cb = _lib.HOOK_FN(trampoline)
    return _lib.HookFilter(points=mask, layer=lay, phase=ph, step=st, fn=ctypes.cast(cb, c_void_p).value), cb


# ---- state ----------------------------------------------------------------------------------

class State:
    """A run's buffers (codi_state_new): up to max_pos positions, `threads` workers."""

    def __init__(self, model, max_pos, threads=None):
        self.model = model
        max_pos = _int(max_pos, "max_pos", 1, 1 << 24)
        threads = model.threads if threads is None else _int(threads, "threads", 1, 4096)
        ptr = lib.codi_state_new(model._p, max_pos, threads)
        if not ptr:
            raise MemoryError("codi_state_new: out of memory for %d positions" % max_pos)
        self._o = _Owner(ptr, lib.codi_state_free, "the state", keep=[model._o])
        self._errors = []        # exceptions raised inside hooks, re-raised by the call that ran them

    @classmethod
    def _borrow(cls, model, ptr, what):
        """A State over a codi_state the library owns (a batched run's), for one callback: its views
        read and write the run's buffers; running, resetting or freeing it raises; call _end() after
        the callback (its views then raise FreedError)."""
        s = cls.__new__(cls)
        s.model, s._errors, s._busy = model, [], True
        s._o = _Owner(ptr, None, what, keep=[model._o])
        return s

    def _end(self):
        self._o.alive = False

    @property
    def _p(self):
        return self._o.check()

    @property
    def _s(self):
        return _lib.StateStruct.from_address(self._p)

    _busy = False

    @contextlib.contextmanager
    def _running(self):
        """The state's pointer for a call that runs it; a callback of that run (a hook, after_latent)
        may read and write the views but not run, reset, copy, free it or change its hooks."""
        if self._busy:
            raise CodiError("the state is running: a hook or after_latent callback may read and write its views, "
                            "but not run, reset, copy or free it or change its hooks")
        p = self._p
        self._busy = True
        try:
            yield p
        finally:
            self._busy = False

    max_pos = property(lambda self: self._s.max_pos)
    n_pos = property(lambda self: self._s.n_pos, doc="positions processed so far")
    phase = property(lambda self: PHASES[self._s.phase])
    step = property(lambda self: self._s.step)
    error = property(lambda self: self._s.error.decode("utf-8", "replace"))

    def _buf(self, field, shape):
        return _view(getattr(self._s, field), shape, self._o, self._o)

    @property
    def resid(self):
        """[L+1, T, D] residual entering layer l at every position (l = L: last layer output)."""
        s = self._s
        return self._buf("resid", (s.n_layers + 1, s.max_pos, s.dim))

    @property
    def key_cache(self):
        """[L, KVH, T, HD] keys after RoPE, as cached."""
        s = self._s
        return self._buf("key_cache", (s.n_layers, s.n_kv_heads, s.max_pos, s.head_dim))

    @property
    def value_cache(self):
        s = self._s
        return self._buf("value_cache", (s.n_layers, s.n_kv_heads, s.max_pos, s.head_dim))

    @property
    def logits(self):
        """[V] logits of the last position."""
        return self._buf("logits", (self._s.vocab,))

    @property
    def final_hidden(self):
        """[D] final-norm hidden state of the last position."""
        return self._buf("final_hidden", (self._s.dim,))

    def _fail(self):
        """Raises the exception a Python callback raised (the library's message added as a note),
        else CodiError with the state's error."""
        msg = self.error or "failed"
        if self._errors:
            e = self._errors[0]
            self._errors.clear()
            if hasattr(e, "add_note"):
                e.add_note("codi_lens: " + msg)
            raise e
        raise CodiError(msg)

    def reset(self):
        """n_pos = 0 (hooks kept)."""
        with self._running() as p:
            lib.codi_state_reset(p)

    def copy_from(self, other):
        """Copies other's positions, caches, logits and phase (codi_state_copy): fork after a prefix."""
        with self._running() as p:
            if lib.codi_state_copy(self.model._p, p, other._p):
                self._fail()

    def forward(self, ids=None, embeds=None, all_logits=False):
        """Appends positions given as token ids or embedding vectors [n, D] (exactly one). Returns
        the logits of every new position [n, V] with all_logits, else None (see .logits)."""
        if (ids is None) == (embeds is None):
            raise ValueError("forward: give ids or embeds, not both or neither")
        cfg = self.model.config
        if ids is not None:
            a, e, n = _ids(ids, cfg["vocab"], "forward ids"), None, None
            n = a.size
        else:
            e = _floats(embeds, "forward embeds")
            if e.ndim == 1:
                e = e.reshape(1, -1)
            if e.ndim != 2 or e.shape[1] != cfg["dim"]:
                raise ValueError("forward embeds: shape %s, expected [n, %d]" % (e.shape, cfg["dim"]))
            a, n = None, e.shape[0]
        out = np.empty((n, cfg["vocab"]), dtype=np.float32) if all_logits else None
        with self._running() as p:
            if lib.codi_forward(self.model._p, p, _ptr(a), _ptr(e), n, _ptr(out)):
                self._fail()
        return out

    def add_hook(self, fn, at=None, layer=None, phase=None, step=None):
        """Calls fn(info, x) during forward passes at the points, layer, phase and step asked for
        (see codi_lens.hook); an exception in fn stops the pass and is raised by the call that ran
        it. Returns the hook's index; at most 16 hooks per state (steering specs take one)."""
        spec = fn if isinstance(fn, _HookSpec) else _HookSpec(fn, at, layer, phase, step)
        filt, cb = _hook_filter(spec, self.model.config["n_layers"], self._errors, self._o)
        with self._running() as p:
            k = lib.codi_state_add_hook(p, _lib.FILTERED_HOOK, byref(filt))
        if k < 0:
            raise CodiError("add_hook: the state's 16 hooks are all in use")
        self._o.keep.append((filt, cb))
        return k

    def clear_hooks(self):
        """Removes every hook (Python hooks and installed steering specs)."""
        with self._running() as p:
            lib.codi_state_clear_hooks(p)
            del self._o.keep[1:]     # keep[0] is the model

    def _mark(self):
        return self._s.n_hooks, len(self._o.keep)

    def _restore(self, mark):
        """Removes the hooks added since mark (a run's own hooks and steering spec)."""
        self._s.n_hooks = mark[0]
        del self._o.keep[mark[1]:]

    def _after_latent(self, ro, fn):
        """Sets ro.after_latent to call fn(state, k, n_latent) after the prefill (k = 0) and each
        latent step k, after the kv_cache edits of an installed spec (codi_steer_after_latent)."""
        if not callable(fn):
            raise TypeError("after_latent: must be callable")
        steer_user = ro.after_latent_user if ro.after_latent else None
        errors = self._errors

        def callback(_user, s_ptr, k, n):
            try:
                if steer_user is not None and lib.codi_steer_after_latent(steer_user, s_ptr, k, n):
                    return 1
                fn(self, k, n)
                return 0
            except BaseException as e:   # noqa: B902
                errors.append(e)
                return 1

        cb = _lib.AFTER_LATENT_FN(callback)
        ro.after_latent, ro.after_latent_user = ctypes.cast(cb, c_void_p).value, None
        self._o.keep.append(cb)

    def install(self, steer, opts=None):
        """Installs a steering spec's hooks (codi_steer_install); opts: a RunOpts that gets the
        kv_cache edits' after_latent callback."""
        with self._running() as p:
            if lib.codi_steer_install(steer._p, p, byref(opts) if opts is not None else None):
                self._fail()
        self._o.keep.append(steer._o)

    def lens_at(self, layer, pos):
        """The logit lens [V] at residual index layer (0..L) and a processed position."""
        out = np.empty(self.model.config["vocab"], dtype=np.float32)
        if lib.codi_lens_at(self.model._p, self._p, int(layer), int(pos), _ptr(out)):
            self._fail()
        return out

    def latent_step(self):
        """One latent step: z = prj(final_hidden) fed at the next position; returns z [D]."""
        z = np.empty(self.model.config["dim"], dtype=np.float32)
        with self._running() as p:
            if lib.codi_latent_step(self.model._p, p, _ptr(z)):
                self._fail()
        return z

    def free(self):
        """Frees the state now (the memory goes when the last view of it is gone; views raise)."""
        with self._running():
            pass
        _release(self, "the state")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()


# ---- steering -------------------------------------------------------------------------------

class Steer:
    """An intervention set from a steering spec: a dict, a JSON string, or a spec file (exactly the
    JSON the CLI's --steer takes; codi_lens.h >>steer documents it). Relative vector files are read
    from base_dir (a file's folder for a path; the current folder for a dict). In a dict, "vector",
    "key_vector", "value_vector" (and random's "norm_of" / "mean_std_of") may also be numpy arrays
    (write_steer_spec saves such a spec for the CLI)."""

    def __init__(self, model, spec, base_dir=None, _ptr_=None):
        self.model = model
        err = _errbuf()
        if _ptr_ is not None:
            ptr = _ptr_
        elif isinstance(spec, dict) and spec_has_arrays(spec):
            with tempfile.TemporaryDirectory(prefix="codi_steer_") as tmp:   # the library reads the vectors at parse
                vec = os.path.join(tmp, "vectors.safetensors")
                spec, tensors = spec_arrays_to_files(spec, vec)
                write_safetensors(vec, tensors)
                text = json.dumps(spec).encode("utf-8")
                ptr = lib.codi_steer_parse(model._p, text, len(text), _path(base_dir) if base_dir else None, err, len(err))
        elif isinstance(spec, dict) or (isinstance(spec, str) and spec.lstrip().startswith("{")):
            text = (json.dumps(spec) if isinstance(spec, dict) else spec).encode("utf-8")
            ptr = lib.codi_steer_parse(model._p, text, len(text), _path(base_dir) if base_dir else None, err, len(err))
        elif isinstance(spec, (str, os.PathLike)):
            ptr = lib.codi_steer_load(model._p, _path(spec), err, len(err))
        else:
            raise TypeError("Steer: spec must be a dict, a JSON string or a file path, not %s" % type(spec).__name__)
        if not ptr:
            raise CodiError("steer: %s" % _text(err))
        self._o = _Owner(ptr, lib.codi_steer_free, "the steering spec")

    @property
    def _p(self):
        return self._o.check()

    @property
    def name(self):
        return _lib.SteerStruct.from_address(self._p).name.decode("utf-8", "replace")

    @property
    def n_edits(self):
        return _lib.SteerStruct.from_address(self._p).n_edits

    def free(self):
        _release(self, "the steering spec")

    def random_like(self, seed):
        """The random control: every vector replaced by a seeded Gaussian direction of the same norm."""
        ptr = lib.codi_steer_random_like(self._p, int(seed))
        if not ptr:
            raise MemoryError("steer random_like: out of memory")
        return Steer(self.model, None, _ptr_=ptr)


# ---- model ----------------------------------------------------------------------------------

_Answer = namedtuple("Answer", "ids text number prompt_ids prompt_len latents latent_logits answer_logits")


class Answer(_Answer):
    """One CODI question's result: ids (answer tokens, eos included when it came), text (decoded,
    special tokens skipped; None without a tokenizer), number (the last number in text, or None),
    prompt_ids, prompt_len, latents [N+1, D] (z_1..z_(N+1); None without prj), latent_logits
    [N+1, V] (lm_head at bot and each latent), answer_logits [n, V] (only when asked for)."""


class Model:
    """A loaded CODI checkpoint or Llama directory (codi_load), with the CLI's options: base (a
    Hugging Face Llama directory it is layered over), exact (merged weights in f32), lora_scale,
    head_dim, threads (used to merge and as the default for states), skip_crc (the CLI's --no-crc),
    tokenizer (a path; default: tokenizer.json beside the model or in base, as the CLI finds it),
    compute ("f32", or "bf16": products with bf16 weights on activations rounded to bf16, as the CLI's
    --compute; default: CODI_COMPUTE from the environment, else "f32")."""

    def __init__(self, path, base=None, exact=False, lora_scale=0.25, head_dim=0, threads=1, skip_crc=False,
                 tokenizer=None, base_vocab=0, compute=None):
        self.path, self.base = str(path), base
        self.threads = _int(threads, "threads", 1, 4096)
        o = lib.codi_load_opts_default()
        self._base_bytes = _path(base) if base else None
        o.base = self._base_bytes
        o.exact = int(bool(exact))
        o.lora_scale = float(lora_scale)
        o.head_dim = _int(head_dim, "head_dim", 0, 4096)
        o.base_vocab = _int(base_vocab, "base_vocab", 0, 1 << 24)
        o.n_threads = self.threads
        o.skip_crc = int(bool(skip_crc))
        if compute is not None:
            if compute not in ("f32", "bf16"):
                raise ValueError("compute must be 'f32' or 'bf16', not %r" % (compute,))
            o.compute = 1 if compute == "bf16" else 0
        err = _errbuf()
        ptr = lib.codi_load(_path(path), byref(o), err, len(err))
        if not ptr:
            raise CodiError(_text(err))
        self._o = _Owner(ptr, lib.codi_model_free, "the model")
        c = _lib.ModelStruct.from_address(ptr).config
        self.config = {name: (list(getattr(c, name))[:c.n_eos] if name == "eos_ids" else getattr(c, name))
                       for name, _ in _lib.Config._fields_ if not name.startswith("_pad")}
        self.exact = bool(_lib.ModelStruct.from_address(ptr).exact)
        self._tokenizer_path, self._tokenizer = tokenizer, None

    @property
    def _p(self):
        return self._o.check()

    n_layers = property(lambda self: self.config["n_layers"])
    dim = property(lambda self: self.config["dim"])
    vocab = property(lambda self: self.config["vocab"])

    @property
    def tokenizer(self):
        """The tokenizer (loaded on first use as the CLI finds it), or None when there is none."""
        if self._tokenizer is None:
            path = self._tokenizer_path
            if path is None:
                cands = [os.path.join(self.path, "tokenizer.json") if os.path.isdir(self.path)
                         else os.path.join(os.path.dirname(self.path), "tokenizer.json")]
                if self.base:
                    cands.append(os.path.join(self.base, "tokenizer.json"))
                path = next((c for c in cands if os.path.exists(c)), None)
            if path is not None:
                self._tokenizer = Tokenizer(path, self)
        return self._tokenizer

    def _need_tokenizer(self):
        t = self.tokenizer
        if t is None:
            raise CodiError("no tokenizer.json beside %s%s: give Model(..., tokenizer=PATH)"
                            % (self.path, " or in " + self.base if self.base else ""))
        return t

    def encode(self, text, add_bos=False, parse_special=True):
        return self._need_tokenizer().encode(text, add_bos, parse_special)

    def decode(self, ids, skip_special=True):
        return self._need_tokenizer().decode(ids, skip_special)

    def token_text(self, id):
        return self._need_tokenizer().token_text(id)

    def prompt_ids(self, question=None, ids=None, recipe=0):
        """The prompt as the CLI builds it: a text question normalised, encoded, then BOS q bot
        (recipe 0, zhenyi4/codi) or BOS q <|eot_id|> bot (recipe 1, Latent Reasoning Sprint); or
        ids used as given (the last is bot)."""
        if (question is None) == (ids is None):
            raise ValueError("give question or ids, not both or neither")
        if ids is not None:
            return _ids(ids, self.vocab, "ids")
        recipe = _int(recipe, "recipe", 0, 1)
        t = self._need_tokenizer()
        err = _errbuf()
        if lib.codi_prompt_check(self._p, recipe, err, len(err)):
            raise CodiError(_text(err))
        q = question.encode("utf-8") if isinstance(question, str) else bytes(question)
        cap = 4096
        while True:
            out = np.zeros(cap, dtype=np.int32)
            n = lib.codi_prompt_from_text(self._p, t._p, q, recipe, _ptr(out), cap)
            if n >= 0:
                return out[:n].copy()
            if cap >= 1 << 22:
                raise CodiError("the question does not fit in %d tokens" % cap)
            cap *= 4

    def state(self, max_pos, threads=None):
        return State(self, max_pos, threads)

    def steer(self, spec, base_dir=None):
        return Steer(self, spec, base_dir)

    def _prepare(self, question, ids, recipe, latents, steps, steer, hooks, state, after_latent=None):
        """The prompt, a state that fits the run (given or new), run options with n_latent, and the
        run's steering spec, hooks and after_latent callback installed (State._restore(mark) removes
        them)."""
        prompt = self.prompt_ids(question, ids, recipe)
        n_latent = _int(latents, "latents", 0, 1000)
        need = prompt.size + n_latent + steps + 2
        if state is None:
            state = State(self, need)
        elif state.max_pos < need:
            raise ValueError("state holds %d positions; this run needs %d" % (state.max_pos, need))
        mark = state._mark()
        ro = lib.codi_run_opts_default(self._p)
        ro.n_latent = n_latent
        try:
            if steer is not None:
                state.install(steer if isinstance(steer, Steer) else Steer(self, steer), ro)
            for h in hooks or ():
                state.add_hook(h if isinstance(h, _HookSpec) else _HookSpec(h, None, None, None, None))
            if after_latent is not None:
                state._after_latent(ro, after_latent)
        except BaseException:
            state._restore(mark)
            raise
        return prompt, state, ro, mark

    def run(self, question=None, ids=None, latents=6, max_answer=256, stop_at_eos=True, recipe=0, steer=None,
            hooks=(), state=None, answer_logits=False, after_latent=None):
        """One CODI question (codi_run): prefill, `latents` latent steps, eot, greedy answer of at
        most max_answer tokens. steer: a Steer or a spec (dict / JSON / file); hooks: callables or
        codi_lens.hook(...) specs; after_latent: fn(state, k, n_latent) called after the prefill
        (k = 0) and each latent step k, before the next input (KV-cache edits through
        state.key_cache / value_cache); all three act on this run only. With state= the run uses
        that state (hooks added by State.add_hook act too) and its buffers hold the run afterwards."""
        max_answer = _int(max_answer, "max_answer", 0, 1024)
        owned = state is None
        prompt, st, ro, mark = self._prepare(question, ids, recipe, latents, max_answer, steer, hooks, state, after_latent)
        try:
            N, D, V = ro.n_latent, self.dim, self.vocab
            z = np.zeros((N + 1, D), dtype=np.float32) if self.config["prj_dim"] else None
            lf = np.zeros((N + 1, V), dtype=np.float32)
            al = np.zeros((max_answer, V), dtype=np.float32) if answer_logits else None
            ro.max_answer, ro.stop_at_eos = max_answer, int(bool(stop_at_eos))
            ro.latents, ro.latent_logits, ro.answer_logits = _ptr(z), _ptr(lf), _ptr(al)
            rr = _lib.RunResult()
            with st._running() as sp:
                if lib.codi_run(self._p, sp, _ptr(prompt), prompt.size, byref(ro), byref(rr)):
                    st._fail()
            return self._answer(rr, prompt, z, lf, al)
        finally:
            if owned:
                st.free()
            else:
                st._restore(mark)

    def _answer(self, rr, prompt, z, lf, al):
        """The Answer of a codi_run_result (answer ids decoded, number extracted) and the run's arrays."""
        ans = np.ctypeslib.as_array(rr.answer)[:rr.n_answer].astype(np.int32)
        text = number = None
        if self.tokenizer is not None:
            text = self.tokenizer.decode(ans)
            v = c_double()
            if lib.codi_extract_answer(text.encode("utf-8"), byref(v)):
                number = v.value
        return Answer(ans, text, number, prompt, rr.prompt_len, z, lf, al[:rr.n_answer] if al is not None else None)

    def trace(self, question=None, ids=None, latents=6, answer_steps=16, stop_at_eos=False, recipe=0, steer=None,
              hooks=(), after_latent=None, out=None, threads=None):
        """What `codi trace` writes, as a dict of numpy arrays with the same names, shapes and dtypes:
        prompt_ids, prefill_logits [T, V], prefill_resid [L+1, T, D], prefill_k / prefill_v
        [L, KVH, T, HD], latent_inputs [N+1, D] (with prj), latent_resid [N+1, L+1, D],
        latent_final_logits [N+1, V], latent_lens_logits [N+1, L+1, V], answer_tokens,
        answer_length [1], answer_logits [n, V-1]. steer, hooks and after_latent as for run.
        out=PATH also writes the file with the CLI's metadata keys."""
        steps = _int(answer_steps, "answer_steps", 0, 1024)
        prompt = self.prompt_ids(question, ids, recipe)
        N = _int(latents, "latents", 0, 1000)
        st = State(self, prompt.size + N + steps + 2, threads)
        try:
            _, st, ro, _ = self._prepare(None, prompt, recipe, N, steps, steer, hooks, st, after_latent)
            c = self.config
            L, D, V, T = c["n_layers"], c["dim"], c["vocab"], prompt.size
            pl = st.forward(prompt, all_logits=True)
            pr = np.array(st.resid[:, :T])
            pk = np.array(st.key_cache[:, :, :T])
            pv = np.array(st.value_cache[:, :, :T])
            li = np.zeros((N + 1, D), dtype=np.float32)
            lf = np.zeros((N + 1, V), dtype=np.float32)
            al = np.zeros((steps + 1, V), dtype=np.float32)
            ro.max_answer, ro.stop_at_eos = steps, int(bool(stop_at_eos))
            ro.latents = _ptr(li) if c["prj_dim"] else None
            ro.latent_logits, ro.answer_logits = _ptr(lf), _ptr(al)
            rr = _lib.RunResult()
            with st._running() as sp:
                if lib.codi_run(self._p, sp, _ptr(prompt), T, byref(ro), byref(rr)):
                    st._fail()
            resid = st.resid
            lr = np.array(resid[:, T - 1:T + N].transpose(1, 0, 2))
            ll = np.stack([np.stack([st.lens_at(l, T - 1 + k) for l in range(L + 1)]) for k in range(N + 1)])
            ans = np.array(rr.answer[:rr.n_answer], dtype=np.int32)
            eos = set(c["eos_ids"])
            length = next((i + 1 for i, t in enumerate(ans) if int(t) in eos), ans.size)
            tr = {"prompt_ids": prompt.copy(), "prefill_logits": pl, "prefill_resid": pr, "prefill_k": pk, "prefill_v": pv}
            if c["prj_dim"]:
                tr["latent_inputs"] = li
            tr.update({"latent_resid": lr, "latent_final_logits": lf, "latent_lens_logits": ll, "answer_tokens": ans,
                       "answer_length": np.array([length], dtype=np.int32),
                       "answer_logits": np.ascontiguousarray(al[:rr.n_answer, :V - 1])})
        finally:
            st.free()
        if out is not None:
            meta = {"codi_lens": "codi_lens " + VERSION, "model": self.path,
                    "question": question if isinstance(question, str) else "",
                    "ids": ",".join(str(int(i)) for i in ids) if ids is not None else "", "recipe": str(recipe),
                    "latents": str(N), "answer_steps": str(steps), "answer_length": str(length),
                    "weights": "f32" if self.exact else "bf16",
                    "steer": "" if steer is None else steer if isinstance(steer, str) else
                    json.dumps(steer, default=lambda a: "<array %s>" % (np.shape(a),)) if isinstance(steer, dict) else "Steer %r" % steer.name,
                    "command": "python codi_lens.Model.trace"}
            write_safetensors(out, tr, meta)
        return tr

    def lens_logits(self, resid):
        """The logit lens lm_head(final_norm(h)) of h [D] -> [V], or of rows [n, D] -> [n, V]."""
        h = _floats(resid, "lens_logits resid")
        rows = h.reshape(-1, self.dim) if h.ndim == 2 else h.reshape(1, -1)
        if h.ndim > 2 or rows.shape[1] != self.dim:
            raise ValueError("lens_logits: shape %s, expected [%d] or [n, %d]" % (h.shape, self.dim, self.dim))
        out = np.empty((rows.shape[0], self.vocab), dtype=np.float32)
        for i in range(rows.shape[0]):
            if lib.codi_lens_logits(self._p, _ptr(rows[i]), _ptr(out[i])):
                raise MemoryError("lens_logits: out of memory")
        return out if h.ndim == 2 else out[0]

    def project(self, h):
        """CODI's projection z = prj(h) of a final-norm hidden state h [D]."""
        x = _floats(h, "project h", (self.dim,))
        z = np.empty(self.dim, dtype=np.float32)
        if lib.codi_project(self._p, _ptr(x), _ptr(z)):
            raise CodiError("project: this model has no prj (not a CODI checkpoint)")
        return z

    def lens_direction(self, base, direction, s, normed=False):
        """delta [V] = lens(base + s * direction) - lens(base) (codi_lens_direction)."""
        b = _floats(base, "lens_direction base", (self.dim,))
        d = _floats(direction, "lens_direction direction", (self.dim,))
        out = np.empty(self.vocab, dtype=np.float32)
        if lib.codi_lens_direction(self._p, _ptr(b), _ptr(d), float(s), int(bool(normed)), _ptr(out)):
            raise CodiError("lens_direction failed")
        return out

    def save_merged(self, path):
        """The model, LoRA merged, as one .safetensors file (codi_save_merged)."""
        err = _errbuf()
        if lib.codi_save_merged(self._p, _path(path), err, len(err)):
            raise CodiError(_text(err))

    def tuned_lens(self, path=None):
        """A tuned lens of this model: loaded from path (a tuned-lens directory, params.pt or our
        .safetensors), or zero translators (= the logit lens) without one."""
        return TunedLens(self, path)

    def free(self):
        """Frees the model when its states are gone too; using it (or them) afterwards raises FreedError."""
        _release(self, "the model")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()

    def prefix(self, question=None, ids=None, latents=0, recipe=0, steer=None, hooks=(), after_latent=None, max_pos=None,
               threads=None):
        """A State after the prefill and `latents` latent steps (codi_run_latents): the shared start
        of branches for run_many ({"prefix": state, ...}), computed once. steer, hooks and after_latent
        act on the prefix only. max_pos: the state's positions (default: what it holds, plus 2)."""
        prompt = self.prompt_ids(question, ids, recipe)
        n = _int(latents, "latents", 0, 1000)
        need = prompt.size + n + 2
        st = State(self, need if max_pos is None else _int(max_pos, "max_pos", need, 1 << 24), threads)
        try:
            _, st, ro, mark = self._prepare(None, prompt, recipe, n, 0, steer, hooks, st, after_latent)
            lf = np.zeros((n + 1, self.vocab), dtype=np.float32)
            ro.latent_logits = _ptr(lf)
            rr = _lib.RunResult()
            with st._running() as sp:
                if lib.codi_run_latents(self._p, sp, _ptr(prompt), prompt.size, byref(ro), byref(rr)):
                    st._fail()
            st._restore(mark)
        except BaseException:
            st.free()
            raise
        st._prefix = (prompt, lf, st.n_pos)
        return st

    _REQUEST_KEYS = ("question", "ids", "prefix", "latents", "max_answer", "stop_at_eos", "recipe", "steer", "hooks",
                     "after_latent", "answer_logits", "latent_logits")

    def run_many(self, requests, batch=32, threads=None, latents=6, max_answer=256, stop_at_eos=True, recipe=0,
                 steer=None, hooks=(), after_latent=None, answer_logits=False, latent_logits=False, on_done=None):
        """Many CODI questions through the batched runner (codi_batch_*: up to `batch` runs advance
        together, one pass over the weights per step, on `threads` workers; finished runs leave and
        queued ones join). Returns one Answer per request, in submission order, equal to Model.run's
        (the same answer ids; logits within 1e-4, bit for bit with batch=1).

        A request is a question (str), prompt ids (a list or int array, as run's ids=), or a dict of
        run's keywords for that request: question / ids / prefix (exactly one; prefix: a State from
        Model.prefix or any state after its prefill and l <= latents latent steps, the run starting at
        latent step l + 1 from a copy of it), latents, max_answer, stop_at_eos, recipe, steer (a Steer,
        a spec dict, JSON text or spec file), hooks, after_latent (fn(state, k, n_latent), a view of the
        run's state valid during the call), answer_logits, latent_logits. The keywords here are the
        defaults of every request. latent_logits (lm_head at bot and each latent, [N+1, V]) is off by
        default: it costs an lm_head per latent step (a branch's rows before its prefix's l are the
        prefix's logits when Model.prefix made it, else NaN; its prompt_ids: the prefix's when Model.prefix
        made it, else None). on_done(index, answer, state) is called as each run ends, with its state
        (valid during the call: read its residuals or caches there). Requests are queued a batch's worth
        ahead of the runs, so their output arrays exist only while they run or are kept in an Answer.

        Errors: a bad request raises before anything runs (ValueError / TypeError / CodiError naming
        the request); an exception in a hook, after_latent or on_done stops the batch and comes out of
        run_many as itself (the library's message as a note); KeyboardInterrupt between steps too."""
        reqs = list(requests)
        batch = _int(batch, "batch", 1, 4096)
        threads = self.threads if threads is None else _int(threads, "threads", 1, 4096)
        if not reqs:
            return []
        defaults = {"latents": latents, "max_answer": max_answer, "stop_at_eos": stop_at_eos, "recipe": recipe, "steer": steer,
                    "hooks": hooks, "after_latent": after_latent, "answer_logits": answer_logits, "latent_logits": latent_logits}
        if on_done is not None and not callable(on_done):
            raise TypeError("run_many: on_done must be callable")
        n_layers, D, V, prj = self.n_layers, self.dim, self.vocab, self.config["prj_dim"]
        steers, prefixes = {}, {}
        runs = []           # per request: (prompt, arrays z/lf/al, RunOpts, steer, hook filters, after_latent, prefix)
        errors = [[] for _ in reqs]
        max_pos = 1
        for i, r in enumerate(reqs):
            what = "run_many request %d" % i
            if isinstance(r, (str, bytes)):
                r = {"question": r}
            elif isinstance(r, dict):
                bad = [k for k in r if k not in self._REQUEST_KEYS]
                if bad:
                    raise ValueError("%s: unknown key %r (known: %s)" % (what, bad[0], ", ".join(self._REQUEST_KEYS)))
            elif isinstance(r, (list, tuple, np.ndarray)):
                r = {"ids": r}
            else:
                raise TypeError("%s: a question, ids or a dict, not %s" % (what, type(r).__name__))
            o = dict(defaults)
            o.update(r)
            if sum(o.get(k) is not None for k in ("question", "ids", "prefix")) != 1:
                raise ValueError("%s: give exactly one of question, ids and prefix" % what)
            n = _int(o["latents"], what + " latents", 0, 1000)
            m_ans = _int(o["max_answer"], what + " max_answer", 0, 1024)
            pre, prompt, lo = o.get("prefix"), None, 0
            if pre is not None:
                if not isinstance(pre, State) or pre.model is not self:
                    raise TypeError("%s: prefix must be a State of this model" % what)
                lo = 0 if pre.phase == "prefill" else pre.step if pre.phase == "latent" else -1
                if pre.n_pos == 0 or lo < 0 or lo > n:
                    raise ValueError("%s: the prefix must be a state after its prefill and at most latents (%d) latent steps "
                                     "(it has %d positions, phase %s, step %d)" % (what, n, pre.n_pos, pre.phase, pre.step))
                prefixes[id(pre)] = pre
                start = pre.n_pos
                info = getattr(pre, "_prefix", None)
                if info is not None and info[2] == pre.n_pos:
                    prompt = info[0]
            else:
                prompt = self.prompt_ids(o.get("question"), o.get("ids"), _int(o["recipe"], what + " recipe", 0, 1))
                start = prompt.size
            max_pos = max(max_pos, start + (n - lo) + 2 + m_ans)
            ro = lib.codi_run_opts_default(self._p)
            ro.n_latent, ro.max_answer, ro.stop_at_eos = n, m_ans, int(bool(o["stop_at_eos"]))
            sp = o["steer"]
            if sp is not None and not isinstance(sp, Steer):
                key = json.dumps(sp, sort_keys=True, default=lambda a: "<array at %x>" % id(a)) if isinstance(sp, dict) else sp
                if key not in steers:
                    try:
                        steers[key] = Steer(self, sp)
                    except CodiError as e:
                        raise CodiError("%s: %s" % (what, e)) from None
                sp = steers[key]
            filters = [_hook_filter(h if isinstance(h, _HookSpec) else _HookSpec(h, None, None, None, None), n_layers,
                                    errors[i], None) for h in (o["hooks"] or ())]
            if len(filters) > 15:
                raise ValueError("%s: %d hooks; a state holds 16 (a steering spec takes one)" % (what, len(filters)))
            if o["after_latent"] is not None and not callable(o["after_latent"]):
                raise TypeError("%s: after_latent must be callable" % what)
            runs.append({"prompt": prompt, "ro": ro, "steer": sp, "hooks": filters, "after_latent": o["after_latent"], "prefix": pre,
                         "l": lo, "prefix_logits": info[1] if pre is not None and prompt is not None else None,
                         "latent_logits": bool(o["latent_logits"]), "answer_logits": bool(o["answer_logits"])})

        answers, failed, stop = [None] * len(reqs), {}, []
        steer_users, arrays = {}, {}

        def submit(b, i):
            """Request i into the batch, with its output arrays (allocated now: a queue of whole
            answer_logits for every request would not fit in memory)."""
            r = runs[i]
            ro, n, lo, pre = r["ro"], r["ro"].n_latent, r["l"], r["prefix"]
            z = np.zeros((n + 1, D), dtype=np.float32) if prj else None
            lf = np.zeros((n + 1, V), dtype=np.float32) if r["latent_logits"] else None
            al = np.zeros((ro.max_answer, V), dtype=np.float32) if r["answer_logits"] else None
            if pre is not None and lo:                  # the prefix's latents 1..l (its rows of the run's arrays)
                T0 = pre.n_pos - lo
                if z is not None:
                    z[:lo] = pre.resid[0, T0:T0 + lo]
                if lf is not None:
                    lf[:lo] = r["prefix_logits"][:lo] if r["prefix_logits"] is not None else np.nan
            ro.latents, ro.latent_logits, ro.answer_logits = _ptr(z), _ptr(lf), _ptr(al)
            arrays[i] = (z, lf, al)
            q = _lib.BatchRequest()
            if pre is None:
                q.ids, q.n_ids = _ptr(r["prompt"]), r["prompt"].size
            else:
                q.prefix = pre._p
            q.opts, q.steer, q.user = ro, r["steer"]._p if r["steer"] is not None else None, i + 1
            q.setup = setup_ptr if r["hooks"] or r["after_latent"] is not None else None
            if lib.codi_batch_submit(b, byref(q)):
                raise CodiError("run_many: " + lib.codi_batch_error(b).decode("utf-8", "replace"))

        def setup(user, s_ptr, o_ptr):
            i = user - 1
            try:
                for filt, _ in runs[i]["hooks"]:
                    if lib.codi_state_add_hook(s_ptr, _lib.FILTERED_HOOK, byref(filt)) < 0:
                        raise CodiError("run_many request %d: the state's 16 hooks are all in use" % i)
                if runs[i]["after_latent"] is not None:
                    ro = _lib.RunOpts.from_address(o_ptr)
                    steer_users[i] = ro.after_latent_user if ro.after_latent else None
                    ro.after_latent, ro.after_latent_user = after_ptr, user
                return 0
            except BaseException as e:   # noqa: B902
                errors[i].append(e)
                return 1

        def after(user, s_ptr, k, n):
            i = user - 1
            try:
                if steer_users[i] is not None and lib.codi_steer_after_latent(steer_users[i], s_ptr, k, n):
                    return 1
                st = State._borrow(self, s_ptr, "the state given to after_latent (valid during the call only)")
                try:
                    runs[i]["after_latent"](st, k, n)
                finally:
                    st._end()
                return 0
            except BaseException as e:   # noqa: B902
                errors[i].append(e)
                return 1

        def done(_user, res_ptr):
            try:
                res = _lib.BatchResult.from_address(res_ptr)
                i = res.index
                if res.status:
                    failed[i] = (res.error or b"failed").decode("utf-8", "replace")
                    return 1
                z, lf, al = arrays.pop(i)
                rr = _lib.RunResult.from_address(res.result)
                answers[i] = a = self._answer(rr, runs[i]["prompt"], z, lf, al[:rr.n_answer].copy() if al is not None else None)
                if on_done is not None:
                    st = State._borrow(self, res.state, "the state given to on_done (valid during the call only)")
                    try:
                        on_done(i, a, st)
                    finally:
                        st._end()
                return 0
            except BaseException as e:   # noqa: B902
                stop.append(e)
                return 1

        setup_cb, after_cb, done_cb = _lib.BATCH_SETUP_FN(setup), _lib.AFTER_LATENT_FN(after), _lib.BATCH_DONE_FN(done)
        after_ptr, setup_ptr = ctypes.cast(after_cb, c_void_p).value, ctypes.cast(setup_cb, c_void_p).value
        model_owner = self._o                                  # the model stays while the batch runs
        b = lib.codi_batch_new(self._p, min(batch, len(reqs)), max_pos, threads)
        if not b:
            raise MemoryError("run_many: out of memory for %d runs of %d positions" % (min(batch, len(reqs)), max_pos))
        with contextlib.ExitStack() as held:
            try:
                for pre in prefixes.values():                  # a prefix must not change until its runs have joined
                    held.enter_context(pre._running())
                nxt, left = 0, 1
                while left > 0 or nxt < len(runs):
                    while nxt < len(runs) and lib.codi_batch_pending(b) < 2 * batch:   # a batch's worth queued
                        submit(b, nxt)
                        nxt += 1
                    left = lib.codi_batch_step(b, done_cb, None)
                    if left < 0:
                        break
                msg = lib.codi_batch_error(b).decode("utf-8", "replace") if left < 0 else ""
            finally:
                lib.codi_batch_free(b)
        del model_owner
        for i in sorted(failed):
            if errors[i]:
                e = errors[i][0]
                if hasattr(e, "add_note"):
                    e.add_note("codi_lens: run_many request %d: %s" % (i, failed[i]))
                raise e
            raise CodiError("run_many request %d: %s" % (i, failed[i]))
        if stop:
            raise stop[0]
        if left < 0:
            raise CodiError("run_many: " + msg)
        return answers


# ---- lenses ---------------------------------------------------------------------------------

def _logits(x):
    a = _floats(x, "logits").reshape(-1)
    if a.size == 0:
        raise ValueError("logits: empty")
    return a


def softmax(logits):
    a = _logits(logits)
    out = np.empty_like(a)
    lib.codi_softmax(_ptr(a), a.size, _ptr(out))
    return out


def log_softmax(logits):
    a = _logits(logits)
    out = np.empty_like(a)
    lib.codi_log_softmax(_ptr(a), a.size, _ptr(out))
    return out


def entropy(logits):
    """Entropy of softmax(logits) in nats."""
    a = _logits(logits)
    return lib.codi_entropy(_ptr(a), a.size)


def kl(p_logits, q_logits):
    """KL(softmax(p) || softmax(q)) in nats."""
    p, q = _logits(p_logits), _logits(q_logits)
    if p.size != q.size:
        raise ValueError("kl: %d and %d logits" % (p.size, q.size))
    return lib.codi_kl(_ptr(p), _ptr(q), p.size)


def top_k(logits, k):
    """(ids, probabilities) of the k most probable tokens, most probable first (ties: lower id)."""
    a = _logits(logits)
    k = _int(k, "top_k k", 1, a.size)
    ids, probs = np.empty(k, np.int32), np.empty(k, np.float32)
    n = lib.codi_top_k(_ptr(a), a.size, k, _ptr(ids), _ptr(probs))
    return ids[:n], probs[:n]


def rank_of(logits, id):
    """(0-based rank, probability) of a token id under top_k's order."""
    a = _logits(logits)
    p = c_float()
    r = lib.codi_rank_of(_ptr(a), a.size, int(id), byref(p))
    if r < 0:
        raise ValueError("rank_of: id %r is out of range [0, %d)" % (id, a.size))
    return r, p.value


class TunedLens:
    """One affine translator per residual index (codi_tuned_lens): weight [L, D, D] and bias [L, D]
    are writable views of the C arrays."""

    def __init__(self, model, path=None, _ptr_=None):
        self.model = model
        err = _errbuf()
        ptr = _ptr_ or (lib.codi_tuned_lens_load(model._p, _path(path), err, len(err)) if path is not None
                        else lib.codi_tuned_lens_new(model._p))
        if not ptr:
            raise CodiError("tuned lens %s: %s" % (path, _text(err)) if path is not None else "tuned lens: out of memory")
        self._o = _Owner(ptr, lib.codi_tuned_lens_free, "the tuned lens")

    @property
    def _p(self):
        return self._o.check()

    @property
    def weight(self):
        t = _lib.TunedLensStruct.from_address(self._p)
        return _view(t.weight, (t.n_layers, t.dim, t.dim), self._o, self._o)

    @property
    def bias(self):
        t = _lib.TunedLensStruct.from_address(self._p)
        return _view(t.bias, (t.n_layers, t.dim), self._o, self._o)

    def logits(self, layer, resid):
        """The tuned lens at residual index layer (0..L; L: the logit lens) of resid [D] -> [V]."""
        m = self.model
        h = _floats(resid, "tuned lens resid", (m.dim,))
        out = np.empty(m.vocab, dtype=np.float32)
        err = _errbuf()
        if lib.codi_tuned_lens_logits(m._p, self._p, _int(layer, "layer", 0, m.n_layers), _ptr(h), _ptr(out), err, len(err)):
            raise CodiError(_text(err))
        return out

    def save(self, path, base_model=""):
        """Our .safetensors form; a directory path (existing) gets the tuned-lens library's
        params.pt + config.json instead."""
        err = _errbuf()
        fn = lib.codi_tuned_lens_save_dir if os.path.isdir(path) else lib.codi_tuned_lens_save
        if fn(self._p, _path(path), base_model.encode("utf-8"), err, len(err)):
            raise CodiError(_text(err))

    def free(self):
        _release(self, "the tuned lens")


def _samples(model, resid, target_logits):
    c = model.config
    r = _floats(resid, "resid")
    if r.ndim != 3 or r.shape[1:] != (c["n_layers"] + 1, c["dim"]) or r.shape[0] == 0:
        raise ValueError("resid: shape %s, expected [n, %d, %d] with n >= 1" % (r.shape, c["n_layers"] + 1, c["dim"]))
    t = None
    if target_logits is not None:
        t = _floats(target_logits, "target_logits", (r.shape[0], c["vocab"]))
    rb, tb = r[0].nbytes, c["vocab"] * 4
    errors = []

    def sample(_user, index, resid_out, target_out):
        try:
            ctypes.memmove(resid_out, r.ctypes.data + index * rb, rb)
            if t is None:
                return 0
            ctypes.memmove(target_out, t.ctypes.data + index * tb, tb)
            return 1
        except BaseException as e:   # noqa: B902
            errors.append(e)
            return -1

    return r, t, _lib.SAMPLE_FN(sample), errors


def train_tuned_lens(model, resid, target_logits=None, recipe="library", steps=250, batch=64, seed=0, threads=1,
                     lens=None):
    """Trains a tuned lens (codi_lens_trainer_*) on samples resid [n, L+1, D] (the residual entering
    each layer; index L = the last layer output), whose targets are lm_head(final_norm(resid[L]))
    or target_logits [n, V]. recipe "library" (the tuned-lens library's: `steps` steps of `batch`)
    or "sprint" (the Latent Reasoning Sprint's: 3 epochs of batch 1). Returns (lens, losses
    [steps, L]: each layer's mean KL on the step's batch before the update)."""
    r, t, cb, errors = _samples(model, resid, target_logits)
    if recipe == "library":
        o = lib.codi_lens_train_library(_int(steps, "steps", 1, 1 << 40), _int(batch, "batch", 1, 1 << 20))
    elif recipe == "sprint":
        o = lib.codi_lens_train_sprint(r.shape[0])
    else:
        raise ValueError("recipe: %r is not 'library' or 'sprint'" % (recipe,))
    o.seed, o.n_threads = int(seed), _int(threads, "threads", 1, 4096)
    lens = lens if lens is not None else TunedLens(model)
    err = _errbuf()
    tr = lib.codi_lens_trainer_new(model._p, lens._p, byref(o), r.shape[0], cb, None, err, len(err))
    if not tr:
        raise CodiError(_text(err))
    losses = np.zeros((o.total_steps, model.n_layers))
    try:
        for k in range(o.total_steps):
            if lib.codi_lens_trainer_step(tr, losses[k].ctypes.data):
                if errors:
                    raise errors[0]
                raise CodiError(lib.codi_lens_trainer_error(tr).decode("utf-8", "replace"))
    finally:
        lib.codi_lens_trainer_free(tr)
    return lens, losses


def tuned_lens_eval(model, lens, resid, target_logits=None, threads=1, per_sample=False):
    """Mean KL(final || lens) per residual index [L] over samples as train_tuned_lens takes them
    (lens None: the logit lens); per_sample=True: each sample's KL, [n, L]
    (codi_tuned_lens_eval_each)."""
    r, t, cb, errors = _samples(model, resid, target_logits)
    out = np.zeros((r.shape[0], model.n_layers) if per_sample else model.n_layers)
    err = _errbuf()
    fn = lib.codi_tuned_lens_eval_each if per_sample else lib.codi_tuned_lens_eval
    if fn(model._p, lens._p if lens is not None else None, cb, None, 0, r.shape[0],
          _int(threads, "threads", 1, 4096), out.ctypes.data, err, len(err)):
        if errors:
            raise errors[0]
        raise CodiError(_text(err))
    return out


# ---- probes and PCA -------------------------------------------------------------------------

def _rows(x, what, dim=None):
    a = _floats(x, what)
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim):
        raise ValueError("%s: shape %s, expected [n, %s]" % (what, a.shape, dim if dim is not None else "D"))
    return a


def _labels(y, n, what="y"):
    a = np.asarray(y)
    if a.dtype.kind not in "iub":
        raise TypeError("%s: needs integer labels, not %s" % (what, a.dtype))
    if a.shape != (n,):
        raise ValueError("%s: shape %s, expected [%d]" % (what, a.shape, n))
    return np.ascontiguousarray(a, dtype=np.int32)


class Probe:
    """A linear probe (codi_probe): logistic regression on standardised inputs. mean, scale [D],
    weight [R, D] and bias [R] are views of the C arrays (R = 1 for two classes)."""

    def __init__(self, ptr):
        self._o = _Owner(ptr, lib.codi_probe_free, "the probe")

    @property
    def _p(self):
        return self._o.check()

    def free(self):
        _release(self, "the probe")

    @classmethod
    def train(cls, x, y, n_classes=None, l2=1e-2, max_iter=1000, tol=1e-6, standardize=True, threads=1):
        """Fits on x [n, D] with labels y [n] in 0..n_classes-1 (default max(y) + 1)."""
        a = _rows(x, "x")
        lab = _labels(y, a.shape[0])
        k = int(lab.max()) + 1 if n_classes is None and lab.size else int(n_classes or 0)
        o = lib.codi_probe_opts_default()
        o.l2, o.max_iter, o.tol = float(l2), _int(max_iter, "max_iter", 1, 1 << 30), float(tol)
        o.standardize, o.n_threads = int(bool(standardize)), _int(threads, "threads", 1, 4096)
        err = _errbuf()
        ptr = lib.codi_probe_train(_ptr(a), _ptr(lab), a.shape[0], a.shape[1], k, byref(o), err, len(err))
        if not ptr:
            raise CodiError("probe: %s" % _text(err))
        return cls(ptr)

    @classmethod
    def load(cls, path, name):
        err = _errbuf()
        ptr = lib.codi_probe_load(_path(path), name.encode("utf-8"), err, len(err))
        if not ptr:
            raise CodiError(_text(err))
        return cls(ptr)

    def _field(self, name, shape):
        return _view(getattr(_lib.ProbeStruct.from_address(self._p), name), shape, self._o, self._o)

    def __getattr__(self, name):
        if name in ("dim", "n_classes", "n_rows", "l2", "iterations", "converged", "loss"):
            return getattr(_lib.ProbeStruct.from_address(self._p), name)
        raise AttributeError(name)

    mean = property(lambda self: self._field("mean", (self.dim,)))
    scale = property(lambda self: self._field("scale", (self.dim,)))
    weight = property(lambda self: self._field("weight", (self.n_rows, self.dim)))
    bias = property(lambda self: self._field("bias", (self.n_rows,)))

    def predict_proba(self, x):
        """Class probabilities [n, K] of rows x [n, D]."""
        a = _rows(x, "x", self.dim)
        out = np.empty((a.shape[0], self.n_classes), dtype=np.float32)
        lib.codi_probe_predict_proba(self._p, _ptr(a), a.shape[0], _ptr(out))
        return out

    def metrics(self, x, y):
        """Accuracy (Wilson 95%), AUC (Hanley-McNeil 95%) and log-loss on rows x, labels y, as a dict."""
        proba = self.predict_proba(x)
        lab = _labels(y, proba.shape[0])
        m = _lib.ProbeMetrics()
        err = _errbuf()
        if lib.codi_probe_metrics_of(_ptr(proba), _ptr(lab), proba.shape[0], proba.shape[1], byref(m), err, len(err)):
            raise CodiError(_text(err))
        return {name: getattr(m, name) for name, _ in _lib.ProbeMetrics._fields_ if not name.startswith("_pad")}


def _save_many(fn, path, objs, metadata):
    names = list(objs)
    ptrs = (c_void_p * len(names))(*[objs[n]._p for n in names])
    enc = [n.encode("utf-8") for n in names]
    cnames = (ctypes.c_char_p * len(names))(*enc)
    meta = None
    if metadata:
        flat = [s.encode("utf-8") for kv in metadata.items() for s in kv] + [None]
        meta = (ctypes.c_char_p * len(flat))(*flat)
    err = _errbuf()
    if fn(_path(path), ptrs, cnames, len(names), meta, err, len(err)):
        raise CodiError(_text(err))


def save_probes(path, probes, metadata=None):
    """Probes {name: Probe} in one .safetensors file (codi_probe_save)."""
    _save_many(lib.codi_probe_save, path, probes, metadata)


class PCA:
    """PCA by covariance (codi_pca): mean [D], components [k, D], variance and explained [k] (views)."""

    def __init__(self, ptr):
        self._o = _Owner(ptr, lib.codi_pca_free, "the PCA")

    @property
    def _p(self):
        return self._o.check()

    def free(self):
        _release(self, "the PCA")

    @classmethod
    def fit(cls, x, n_components, threads=1):
        """The top n_components of rows x [n, D] (or an iterable of row blocks, streamed)."""
        blocks = [x] if isinstance(x, np.ndarray) or not hasattr(x, "__iter__") else x
        acc, err, dim = None, _errbuf(), None
        try:
            for b in blocks:
                a = _rows(b, "x", dim)            # every block as wide as the first
                if acc is None:
                    dim = a.shape[1]
                    acc = lib.codi_pca_acc_new(a.shape[1], _int(threads, "threads", 1, 4096), err, len(err))
                    if not acc:
                        raise CodiError(_text(err))
                if lib.codi_pca_acc_add(acc, _ptr(a), a.shape[0], err, len(err)):
                    raise CodiError(_text(err))
            if acc is None:
                raise ValueError("PCA.fit: no rows")
            ptr = lib.codi_pca_fit(acc, _int(n_components, "n_components", 1, 1 << 24), err, len(err))
            if not ptr:
                raise CodiError(_text(err))
            return cls(ptr)
        finally:
            if acc:
                lib.codi_pca_acc_free(acc)

    @classmethod
    def load(cls, path, name):
        err = _errbuf()
        ptr = lib.codi_pca_load(_path(path), name.encode("utf-8"), err, len(err))
        if not ptr:
            raise CodiError(_text(err))
        return cls(ptr)

    def __getattr__(self, name):
        if name in ("dim", "n_components", "n_rows", "total_variance"):
            return getattr(_lib.PcaStruct.from_address(self._p), name)
        raise AttributeError(name)

    def _field(self, name, shape, dtype=np.float32, ctype=c_float):
        return _view(getattr(_lib.PcaStruct.from_address(self._p), name), shape, self._o, self._o, dtype, ctype)

    mean = property(lambda self: self._field("mean", (self.dim,)))
    components = property(lambda self: self._field("components", (self.n_components, self.dim)))
    variance = property(lambda self: self._field("variance", (self.n_components,), np.float64, c_double))
    explained = property(lambda self: self._field("explained", (self.n_components,), np.float64, c_double))

    def project(self, x):
        """(x [n, D] - mean) . components^T -> [n, k]."""
        a = _rows(x, "x", self.dim)
        out = np.empty((a.shape[0], self.n_components), dtype=np.float32)
        lib.codi_pca_project(self._p, _ptr(a), a.shape[0], _ptr(out))
        return out


def save_pcas(path, pcas, metadata=None):
    """PCAs {name: PCA} in one .safetensors file (codi_pca_save)."""
    _save_many(lib.codi_pca_save, path, pcas, metadata)


# ---- the C reader, kernels ------------------------------------------------------------------

def read_safetensors_c(path):
    """Every tensor of a .safetensors file as float32 through the library's own reader (codi_safetensors_open,
    codi_safetensors_read_f32): what the engine sees, to check read_safetensors against (no metadata: the C
    API reads it by key)."""
    err = _errbuf()
    f = lib.codi_safetensors_open(_path(path), err, len(err))
    if not f:
        raise CodiError(_text(err))
    try:
        out = {}
        for i in range(lib.codi_safetensors_count(f)):
            t = _lib.StTensor()
            lib.codi_safetensors_tensor_at(f, i, byref(t))
            name = t.name
            shape = tuple(t.shape[:t.ndim])
            a = np.empty(shape, dtype=np.float32)
            if lib.codi_safetensors_read_f32(f, name, _ptr(a), a.size, err, len(err)) < 0:
                raise CodiError(_text(err))
            out[name.decode("utf-8")] = a
        return out
    finally:
        lib.codi_safetensors_close(f)


def kernel_name():
    """The SIMD path the matrix products run on."""
    return lib.codi_kernel_name().decode()


def set_kernel(name):
    if lib.codi_set_kernel(name.encode()):
        raise ValueError("set_kernel: %r is not available (available: %s)" % (name, ", ".join(kernels_available())))


def kernels_available():
    names = (ctypes.c_char_p * 16)()
    n = lib.codi_kernels_available(names, 16)
    return [names[i].decode() for i in range(min(n, 16))]
