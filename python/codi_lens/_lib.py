"""The shared library (build/libcodi_lens.so, `make python`) and its ctypes declarations.

Struct layouts are never written down here: each ctypes struct is built at import from the
table of sizes and field offsets that python/codi_lens_shim.c compiles from the header, with the
field types declared below checked against the C sizes. A header whose structs changed in a way
this file does not know raises ImportError instead of reading memory with a stale layout.
"""
import ctypes
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_int32, c_int64,
                    c_long, c_size_t, c_ubyte, c_uint, c_uint64, c_void_p)

_HERE = os.path.dirname(os.path.abspath(__file__))


def _find_library():
    env = os.environ.get("CODI_LENS_LIB")
    candidates = [env] if env else []
    candidates += [os.path.join(_HERE, "libcodi_lens.so"),
                   os.path.join(_HERE, "..", "..", "build", "libcodi_lens.so")]
    for path in candidates:
        if path and os.path.exists(path):
            return os.path.abspath(path)
    raise ImportError("codi_lens: no libcodi_lens.so (looked at %s); run `make python` in the repository "
                      "or set CODI_LENS_LIB to its path" % ", ".join(c for c in candidates if c))


LIBRARY_PATH = _find_library()
lib = ctypes.CDLL(LIBRARY_PATH)


class _PyField(Structure):
    _fields_ = [("type", c_char_p), ("field", c_char_p), ("offset", c_size_t), ("size", c_size_t)]


lib.codi_py_layout_count.restype = c_int
lib.codi_py_layout_at.restype = POINTER(_PyField)
lib.codi_py_layout_at.argtypes = [c_int]
lib.codi_py_version.restype = c_char_p

_LAYOUT = {}
for _i in range(lib.codi_py_layout_count()):
    _f = lib.codi_py_layout_at(_i).contents
    _LAYOUT.setdefault(_f.type.decode(), {})[_f.field.decode()] = (_f.offset, _f.size)

VERSION = lib.codi_py_version().decode()


def _struct(cname, decl):
    """A ctypes struct with the fields in decl [(name, ctype)] at the C offsets of struct cname,
    padding elsewhere, and the C size."""
    if cname not in _LAYOUT:
        raise ImportError("codi_lens: %s is not in the shim's layout table (rebuild with `make python`)" % cname)
    table = _LAYOUT[cname]
    size = table[""][1]
    placed = []
    for name, ctype in decl:
        if name not in table:
            raise ImportError("codi_lens: %s.%s is not in the shim's layout table (rebuild with `make python`)" % (cname, name))
        off, fsize = table[name]
        if ctypes.sizeof(ctype) != fsize:
            raise ImportError("codi_lens: %s.%s is %d bytes in C, %d in the binding" % (cname, name, fsize, ctypes.sizeof(ctype)))
        placed.append((off, name, ctype))
    placed.sort(key=lambda p: p[0])
    fields, pos = [], 0
    for off, name, ctype in placed:
        if off < pos:
            raise ImportError("codi_lens: %s.%s overlaps the field before it" % (cname, name))
        if off > pos:
            fields.append(("_pad%d" % pos, c_ubyte * (off - pos)))
        fields.append((name, ctype))
        pos = off + ctypes.sizeof(ctype)
    if size > pos:
        fields.append(("_pad%d" % pos, c_ubyte * (size - pos)))
    cls = type(cname, (Structure,), {"_pack_": 1, "_fields_": fields})
    if ctypes.sizeof(cls) != size or any(getattr(cls, n).offset != table[n][0] for _, n, _ in placed):
        raise ImportError("codi_lens: could not lay out %s as the C compiler did" % cname)
    return cls


HOOK_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_void_p)           # (user, info, data)
AFTER_LATENT_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_int, c_int)
ON_TOKEN_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int32)
SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_long, c_void_p, c_void_p)  # (user, index, resid, target)
BATCH_SETUP_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_void_p)    # (user, state, run opts)
BATCH_DONE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p)               # (user, codi_batch_result *)

Config = _struct("codi_config", [
    ("dim", c_int), ("ffn_dim", c_int), ("n_layers", c_int), ("n_heads", c_int), ("n_kv_heads", c_int),
    ("head_dim", c_int), ("vocab", c_int), ("prj_dim", c_int), ("norm_eps", c_float), ("ln_eps", c_float),
    ("rope_theta", c_float), ("rope_llama3", c_int), ("rope_factor", c_float), ("rope_low_freq_factor", c_float),
    ("rope_high_freq_factor", c_float), ("rope_original_max_pos", c_int), ("bos_id", c_int), ("eos_ids", c_int * 8),
    ("n_eos", c_int), ("pad_id", c_int), ("bot_id", c_int), ("eot_id", c_int), ("lora_scale", c_float)])
LoadOpts = _struct("codi_load_opts", [
    ("base", c_char_p), ("exact", c_int), ("lora_scale", c_float), ("head_dim", c_int), ("base_vocab", c_int),
    ("n_threads", c_int), ("skip_crc", c_int), ("compute", c_int)])
ModelStruct = _struct("codi_model", [("config", Config), ("exact", c_int)])
HookInfo = _struct("codi_hook_info", [("point", c_int), ("layer", c_int), ("pos", c_int), ("phase", c_int),
                                      ("step", c_int), ("size", c_int)])
StateStruct = _struct("codi_state", [
    ("max_pos", c_int), ("n_pos", c_int), ("chunk", c_int), ("n_layers", c_int), ("dim", c_int), ("n_kv_heads", c_int),
    ("head_dim", c_int), ("vocab", c_int), ("resid", c_void_p), ("key_cache", c_void_p), ("value_cache", c_void_p),
    ("final_hidden", c_void_p), ("logits", c_void_p), ("phase", c_int), ("step", c_int), ("n_hooks", c_int),
    ("error", c_char * 256)])
RunOpts = _struct("codi_run_opts", [
    ("n_latent", c_int), ("max_answer", c_int), ("stop_at_eos", c_int), ("feed_eot", c_int), ("answer_logits", c_void_p),
    ("latent_logits", c_void_p), ("latents", c_void_p), ("on_token", c_void_p), ("on_token_user", c_void_p),
    ("after_latent", c_void_p), ("after_latent_user", c_void_p)])
RunResult = _struct("codi_run_result", [("answer", c_int32 * 1024), ("n_answer", c_int), ("prompt_len", c_int)])
SteerStruct = _struct("codi_steer", [("n_edits", c_int), ("name", c_char * 128)])
StTensor = _struct("codi_safetensors_tensor", [("name", c_char_p), ("dtype", c_char * 8), ("ndim", c_int), ("shape", c_int64 * 8),
                                      ("numel", c_size_t), ("data", c_void_p)])
TokenizerStruct = _struct("codi_tokenizer", [("n_ids", c_int), ("bos_id", c_int), ("max_token_len", c_int)])
TunedLensStruct = _struct("codi_tuned_lens", [("n_layers", c_int), ("dim", c_int), ("weight", c_void_p), ("bias", c_void_p)])
LensTrainOpts = _struct("codi_lens_train_opts", [
    ("optimizer", c_int), ("lr", c_double), ("momentum", c_double), ("beta2", c_double), ("eps", c_double),
    ("weight_decay", c_double), ("clip_norm", c_double), ("linear_decay", c_int), ("total_steps", c_long), ("batch", c_int),
    ("seed", c_uint64), ("n_threads", c_int), ("data_id", c_char_p)])
ProbeStruct = _struct("codi_probe", [
    ("dim", c_int), ("n_classes", c_int), ("n_rows", c_int), ("mean", c_void_p), ("scale", c_void_p), ("weight", c_void_p),
    ("bias", c_void_p), ("l2", c_double), ("iterations", c_int), ("converged", c_int), ("loss", c_double)])
ProbeOpts = _struct("codi_probe_opts", [("l2", c_double), ("max_iter", c_int), ("tol", c_double), ("standardize", c_int),
                                        ("n_threads", c_int)])
ProbeMetrics = _struct("codi_probe_metrics", [
    ("n", c_int), ("accuracy", c_double), ("acc_lo", c_double), ("acc_hi", c_double), ("auc", c_double),
    ("auc_lo", c_double), ("auc_hi", c_double), ("log_loss", c_double)])
PcaStruct = _struct("codi_pca", [
    ("dim", c_int), ("n_components", c_int), ("n_rows", c_long), ("mean", c_void_p), ("components", c_void_p),
    ("variance", c_void_p), ("explained", c_void_p), ("total_variance", c_double)])
BatchRequest = _struct("codi_batch_request", [
    ("ids", c_void_p), ("n_ids", c_int), ("prefix", c_void_p), ("opts", RunOpts), ("steer", c_void_p), ("setup", c_void_p),
    ("user", c_void_p)])
BatchResult = _struct("codi_batch_result", [("user", c_void_p), ("index", c_long), ("status", c_int), ("error", c_char_p),
                                            ("result", c_void_p), ("state", c_void_p)])
HookFilter = _struct("codi_py_hook_filter", [("points", c_uint), ("layer", c_int), ("phase", c_int), ("step", c_int),
                                             ("fn", c_void_p), ("user", c_void_p)])

P = c_void_p
_SIGNATURES = {
    # name: (restype, argtypes)
    "codi_load_opts_default": (LoadOpts, []),
    "codi_load": (P, [c_char_p, POINTER(LoadOpts), P, c_size_t]),
    "codi_model_free": (None, [P]),
    "codi_state_new": (P, [P, c_int, c_int]),
    "codi_state_free": (None, [P]),
    "codi_state_reset": (None, [P]),
    "codi_state_copy": (c_int, [P, P, P]),
    "codi_state_add_hook": (c_int, [P, P, P]),
    "codi_state_clear_hooks": (None, [P]),
    "codi_forward": (c_int, [P, P, P, P, c_int, P]),
    "codi_project": (c_int, [P, P, P]),
    "codi_latent_step": (c_int, [P, P, P]),
    "codi_argmax_answer": (c_int, [P, P]),
    "codi_run_opts_default": (RunOpts, [P]),
    "codi_run": (c_int, [P, P, P, c_int, POINTER(RunOpts), POINTER(RunResult)]),
    "codi_run_latents": (c_int, [P, P, P, c_int, POINTER(RunOpts), POINTER(RunResult)]),
    "codi_run_answer": (c_int, [P, P, POINTER(RunOpts), POINTER(RunResult)]),
    "codi_batch_new": (P, [P, c_int, c_int, c_int]),
    "codi_batch_submit": (c_int, [P, POINTER(BatchRequest)]),
    "codi_batch_step": (c_int, [P, P, P]),
    "codi_batch_pending": (c_int, [P]),
    "codi_batch_error": (c_char_p, [P]),
    "codi_batch_free": (None, [P]),
    "codi_prompt_ids": (c_int, [P, c_int, P, c_int, P, c_int]),
    "codi_prompt_check": (c_int, [P, c_int, P, c_size_t]),
    "codi_extract_answer": (c_int, [c_char_p, POINTER(c_double)]),
    "codi_save_merged": (c_int, [P, c_char_p, P, c_size_t]),
    "codi_lens_logits": (c_int, [P, P, P]),
    "codi_lens_at": (c_int, [P, P, c_int, c_int, P]),
    "codi_kernel_name": (c_char_p, []),
    "codi_set_kernel": (c_int, [c_char_p]),
    "codi_kernels_available": (c_int, [P, c_int]),
    "codi_steer_parse": (P, [P, c_char_p, c_size_t, c_char_p, P, c_size_t]),
    "codi_steer_load": (P, [P, c_char_p, P, c_size_t]),
    "codi_steer_random_like": (P, [P, c_uint64]),
    "codi_steer_free": (None, [P]),
    "codi_steer_install": (c_int, [P, P, POINTER(RunOpts)]),
    "codi_steer_after_latent": (c_int, [P, P, c_int, c_int]),
    "codi_safetensors_open": (P, [c_char_p, P, c_size_t]),
    "codi_safetensors_close": (None, [P]),
    "codi_safetensors_count": (c_int, [P]),
    "codi_safetensors_tensor_at": (c_int, [P, c_int, POINTER(StTensor)]),
    "codi_safetensors_read_f32": (c_long, [P, c_char_p, P, c_size_t, P, c_size_t]),
    "codi_safetensors_metadata": (c_char_p, [P, c_char_p]),
    "codi_tokenizer_load": (P, [c_char_p, P, c_size_t]),
    "codi_tokenizer_free": (None, [P]),
    "codi_tokenizer_add_codi_tokens": (c_int, [P, P, P, c_size_t]),
    "codi_token_id": (c_int, [P, c_char_p, c_size_t]),
    "codi_encode": (c_int, [P, c_char_p, c_size_t, c_int, c_int, P, c_int]),
    "codi_decode": (c_long, [P, P, c_int, c_int, P, c_size_t]),
    "codi_token_text": (c_long, [P, c_int32, P, c_size_t]),
    "codi_utf8_invalid_at": (c_long, [c_char_p, c_size_t]),
    "codi_prompt_from_text": (c_int, [P, P, c_char_p, c_int, P, c_int]),
    "codi_log_softmax": (c_double, [P, c_int, P]),
    "codi_softmax": (None, [P, c_int, P]),
    "codi_entropy": (c_double, [P, c_int]),
    "codi_kl": (c_double, [P, P, c_int]),
    "codi_top_k": (c_int, [P, c_int, c_int, P, P]),
    "codi_rank_of": (c_int, [P, c_int, c_int32, POINTER(c_float)]),
    "codi_number_tokens": (c_int, [P, c_double, P]),
    "codi_tuned_lens_new": (P, [P]),
    "codi_tuned_lens_free": (None, [P]),
    "codi_tuned_lens_logits": (c_int, [P, P, c_int, P, P, P, c_size_t]),
    "codi_tuned_lens_load": (P, [P, c_char_p, P, c_size_t]),
    "codi_tuned_lens_save_dir": (c_int, [P, c_char_p, c_char_p, P, c_size_t]),
    "codi_tuned_lens_save": (c_int, [P, c_char_p, c_char_p, P, c_size_t]),
    "codi_lens_train_library": (LensTrainOpts, [c_long, c_int]),
    "codi_lens_train_sprint": (LensTrainOpts, [c_long]),
    "codi_lens_trainer_new": (P, [P, P, POINTER(LensTrainOpts), c_long, P, P, P, c_size_t]),
    "codi_lens_trainer_free": (None, [P]),
    "codi_lens_trainer_step": (c_int, [P, P]),
    "codi_lens_trainer_steps_done": (c_long, [P]),
    "codi_lens_trainer_error": (c_char_p, [P]),
    "codi_lens_trainer_save": (c_int, [P, c_char_p, P, c_size_t]),
    "codi_lens_trainer_resume": (c_int, [P, c_char_p, P, c_size_t]),
    "codi_tuned_lens_eval": (c_int, [P, P, P, P, c_long, c_long, c_int, P, P, c_size_t]),
    "codi_tuned_lens_eval_each": (c_int, [P, P, P, P, c_long, c_long, c_int, P, P, c_size_t]),
    "codi_probe_opts_default": (ProbeOpts, []),
    "codi_probe_train": (P, [P, P, c_int, c_int, c_int, POINTER(ProbeOpts), P, c_size_t]),
    "codi_probe_free": (None, [P]),
    "codi_probe_predict_proba": (None, [P, P, c_int, P]),
    "codi_probe_metrics_of": (c_int, [P, P, c_int, c_int, POINTER(ProbeMetrics), P, c_size_t]),
    "codi_roc_auc": (c_double, [P, P, c_int, POINTER(c_double)]),
    "codi_probe_save": (c_int, [c_char_p, P, P, c_int, P, P, c_size_t]),
    "codi_probe_load": (P, [c_char_p, c_char_p, P, c_size_t]),
    "codi_pca_acc_new": (P, [c_int, c_int, P, c_size_t]),
    "codi_pca_acc_add": (c_int, [P, P, c_int, P, c_size_t]),
    "codi_pca_acc_rows": (c_long, [P]),
    "codi_pca_acc_free": (None, [P]),
    "codi_pca_fit": (P, [P, c_int, P, c_size_t]),
    "codi_pca_free": (None, [P]),
    "codi_pca_project": (None, [P, P, c_int, P]),
    "codi_pca_save": (c_int, [c_char_p, P, P, c_int, P, P, c_size_t]),
    "codi_pca_load": (P, [c_char_p, c_char_p, P, c_size_t]),
    "codi_lens_direction": (c_int, [P, P, P, c_float, c_int, P]),
}
for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args

FILTERED_HOOK = ctypes.cast(lib.codi_py_filtered_hook, c_void_p).value
