/* codi_lens_shim.c: the shared library the Python package (python/codi_lens) loads through ctypes:
   the whole header (threads on), plus what a binding needs that C callers get from the compiler:
   the size and field offsets of every struct Python reads or fills (the package builds its ctypes
   structs from this table at import, so a changed struct can never be read with a stale layout),
   the library version, and a hook trampoline that filters by point, layer, phase and step in C so
   that Python is called only where it asked. Built by `make python` into build/libcodi_lens.so. */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"

/* One row of the layout table: a struct's field (field "" : the struct's size in `size`). */
typedef struct { const char *type, *field; size_t offset, size; } codi_py_field;

/* A Python hook's filter: the C hook codi_py_filtered_hook calls fn(user, info, data) only at the
   points in the mask (bit CODI_HOOK_*) and where layer / phase / step match (CODI_ALL: any). */
typedef struct {
    unsigned points;
    int layer, phase, step;
    codi_hook_fn fn;
    void *user;
} codi_py_hook_filter;

#define CODI_PY_SIZE(T) { #T, "", 0, sizeof(T) }
#define CODI_PY_FIELD(T, f) { #T, #f, offsetof(T, f), sizeof(((T *)0)->f) }
static const codi_py_field codi_py_fields[] = {
    CODI_PY_SIZE(codi_config),
    CODI_PY_FIELD(codi_config, dim), CODI_PY_FIELD(codi_config, ffn_dim), CODI_PY_FIELD(codi_config, n_layers),
    CODI_PY_FIELD(codi_config, n_heads), CODI_PY_FIELD(codi_config, n_kv_heads), CODI_PY_FIELD(codi_config, head_dim),
    CODI_PY_FIELD(codi_config, vocab), CODI_PY_FIELD(codi_config, prj_dim), CODI_PY_FIELD(codi_config, norm_eps),
    CODI_PY_FIELD(codi_config, ln_eps), CODI_PY_FIELD(codi_config, rope_theta), CODI_PY_FIELD(codi_config, rope_llama3),
    CODI_PY_FIELD(codi_config, rope_factor), CODI_PY_FIELD(codi_config, rope_low_freq_factor),
    CODI_PY_FIELD(codi_config, rope_high_freq_factor), CODI_PY_FIELD(codi_config, rope_original_max_pos),
    CODI_PY_FIELD(codi_config, bos_id), CODI_PY_FIELD(codi_config, eos_ids), CODI_PY_FIELD(codi_config, n_eos),
    CODI_PY_FIELD(codi_config, pad_id), CODI_PY_FIELD(codi_config, bot_id), CODI_PY_FIELD(codi_config, eot_id),
    CODI_PY_FIELD(codi_config, lora_scale),
    CODI_PY_SIZE(codi_load_opts),
    CODI_PY_FIELD(codi_load_opts, base), CODI_PY_FIELD(codi_load_opts, exact), CODI_PY_FIELD(codi_load_opts, lora_scale),
    CODI_PY_FIELD(codi_load_opts, head_dim), CODI_PY_FIELD(codi_load_opts, base_vocab), CODI_PY_FIELD(codi_load_opts, n_threads),
    CODI_PY_FIELD(codi_load_opts, skip_crc), CODI_PY_FIELD(codi_load_opts, compute),
    CODI_PY_SIZE(codi_model),
    CODI_PY_FIELD(codi_model, config), CODI_PY_FIELD(codi_model, exact),
    CODI_PY_SIZE(codi_hook_info),
    CODI_PY_FIELD(codi_hook_info, point), CODI_PY_FIELD(codi_hook_info, layer), CODI_PY_FIELD(codi_hook_info, pos),
    CODI_PY_FIELD(codi_hook_info, phase), CODI_PY_FIELD(codi_hook_info, step), CODI_PY_FIELD(codi_hook_info, size),
    CODI_PY_SIZE(codi_state),
    CODI_PY_FIELD(codi_state, max_pos), CODI_PY_FIELD(codi_state, n_pos), CODI_PY_FIELD(codi_state, chunk),
    CODI_PY_FIELD(codi_state, n_layers), CODI_PY_FIELD(codi_state, dim), CODI_PY_FIELD(codi_state, n_kv_heads),
    CODI_PY_FIELD(codi_state, head_dim), CODI_PY_FIELD(codi_state, vocab), CODI_PY_FIELD(codi_state, resid),
    CODI_PY_FIELD(codi_state, key_cache), CODI_PY_FIELD(codi_state, value_cache), CODI_PY_FIELD(codi_state, final_hidden),
    CODI_PY_FIELD(codi_state, logits), CODI_PY_FIELD(codi_state, phase), CODI_PY_FIELD(codi_state, step),
    CODI_PY_FIELD(codi_state, n_hooks), CODI_PY_FIELD(codi_state, error),
    CODI_PY_SIZE(codi_run_opts),
    CODI_PY_FIELD(codi_run_opts, n_latent), CODI_PY_FIELD(codi_run_opts, max_answer), CODI_PY_FIELD(codi_run_opts, stop_at_eos),
    CODI_PY_FIELD(codi_run_opts, feed_eot), CODI_PY_FIELD(codi_run_opts, answer_logits), CODI_PY_FIELD(codi_run_opts, latent_logits),
    CODI_PY_FIELD(codi_run_opts, latents), CODI_PY_FIELD(codi_run_opts, on_token), CODI_PY_FIELD(codi_run_opts, on_token_user),
    CODI_PY_FIELD(codi_run_opts, after_latent), CODI_PY_FIELD(codi_run_opts, after_latent_user),
    CODI_PY_SIZE(codi_run_result),
    CODI_PY_FIELD(codi_run_result, answer), CODI_PY_FIELD(codi_run_result, n_answer), CODI_PY_FIELD(codi_run_result, prompt_len),
    CODI_PY_SIZE(codi_steer),
    CODI_PY_FIELD(codi_steer, n_edits), CODI_PY_FIELD(codi_steer, name),
    CODI_PY_SIZE(codi_safetensors_tensor),
    CODI_PY_FIELD(codi_safetensors_tensor, name), CODI_PY_FIELD(codi_safetensors_tensor, dtype), CODI_PY_FIELD(codi_safetensors_tensor, ndim),
    CODI_PY_FIELD(codi_safetensors_tensor, shape), CODI_PY_FIELD(codi_safetensors_tensor, numel), CODI_PY_FIELD(codi_safetensors_tensor, data),
    CODI_PY_SIZE(codi_tokenizer),
    CODI_PY_FIELD(codi_tokenizer, n_ids), CODI_PY_FIELD(codi_tokenizer, bos_id), CODI_PY_FIELD(codi_tokenizer, max_token_len),
    CODI_PY_SIZE(codi_tuned_lens),
    CODI_PY_FIELD(codi_tuned_lens, n_layers), CODI_PY_FIELD(codi_tuned_lens, dim), CODI_PY_FIELD(codi_tuned_lens, weight),
    CODI_PY_FIELD(codi_tuned_lens, bias),
    CODI_PY_SIZE(codi_lens_train_opts),
    CODI_PY_FIELD(codi_lens_train_opts, optimizer), CODI_PY_FIELD(codi_lens_train_opts, lr), CODI_PY_FIELD(codi_lens_train_opts, momentum),
    CODI_PY_FIELD(codi_lens_train_opts, beta2), CODI_PY_FIELD(codi_lens_train_opts, eps), CODI_PY_FIELD(codi_lens_train_opts, weight_decay),
    CODI_PY_FIELD(codi_lens_train_opts, clip_norm), CODI_PY_FIELD(codi_lens_train_opts, linear_decay),
    CODI_PY_FIELD(codi_lens_train_opts, total_steps), CODI_PY_FIELD(codi_lens_train_opts, batch), CODI_PY_FIELD(codi_lens_train_opts, seed),
    CODI_PY_FIELD(codi_lens_train_opts, n_threads), CODI_PY_FIELD(codi_lens_train_opts, data_id),
    CODI_PY_SIZE(codi_probe),
    CODI_PY_FIELD(codi_probe, dim), CODI_PY_FIELD(codi_probe, n_classes), CODI_PY_FIELD(codi_probe, n_rows), CODI_PY_FIELD(codi_probe, mean),
    CODI_PY_FIELD(codi_probe, scale), CODI_PY_FIELD(codi_probe, weight), CODI_PY_FIELD(codi_probe, bias), CODI_PY_FIELD(codi_probe, l2),
    CODI_PY_FIELD(codi_probe, iterations), CODI_PY_FIELD(codi_probe, converged), CODI_PY_FIELD(codi_probe, loss),
    CODI_PY_SIZE(codi_probe_opts),
    CODI_PY_FIELD(codi_probe_opts, l2), CODI_PY_FIELD(codi_probe_opts, max_iter), CODI_PY_FIELD(codi_probe_opts, tol),
    CODI_PY_FIELD(codi_probe_opts, standardize), CODI_PY_FIELD(codi_probe_opts, n_threads),
    CODI_PY_SIZE(codi_probe_metrics),
    CODI_PY_FIELD(codi_probe_metrics, n), CODI_PY_FIELD(codi_probe_metrics, accuracy), CODI_PY_FIELD(codi_probe_metrics, acc_lo),
    CODI_PY_FIELD(codi_probe_metrics, acc_hi), CODI_PY_FIELD(codi_probe_metrics, auc), CODI_PY_FIELD(codi_probe_metrics, auc_lo),
    CODI_PY_FIELD(codi_probe_metrics, auc_hi), CODI_PY_FIELD(codi_probe_metrics, log_loss),
    CODI_PY_SIZE(codi_pca),
    CODI_PY_FIELD(codi_pca, dim), CODI_PY_FIELD(codi_pca, n_components), CODI_PY_FIELD(codi_pca, n_rows), CODI_PY_FIELD(codi_pca, mean),
    CODI_PY_FIELD(codi_pca, components), CODI_PY_FIELD(codi_pca, variance), CODI_PY_FIELD(codi_pca, explained),
    CODI_PY_FIELD(codi_pca, total_variance),
    CODI_PY_SIZE(codi_batch_request),
    CODI_PY_FIELD(codi_batch_request, ids), CODI_PY_FIELD(codi_batch_request, n_ids), CODI_PY_FIELD(codi_batch_request, prefix),
    CODI_PY_FIELD(codi_batch_request, opts), CODI_PY_FIELD(codi_batch_request, steer), CODI_PY_FIELD(codi_batch_request, setup),
    CODI_PY_FIELD(codi_batch_request, user),
    CODI_PY_SIZE(codi_batch_result),
    CODI_PY_FIELD(codi_batch_result, user), CODI_PY_FIELD(codi_batch_result, index), CODI_PY_FIELD(codi_batch_result, status),
    CODI_PY_FIELD(codi_batch_result, error), CODI_PY_FIELD(codi_batch_result, result), CODI_PY_FIELD(codi_batch_result, state),
    CODI_PY_SIZE(codi_py_hook_filter),
    CODI_PY_FIELD(codi_py_hook_filter, points), CODI_PY_FIELD(codi_py_hook_filter, layer), CODI_PY_FIELD(codi_py_hook_filter, phase),
    CODI_PY_FIELD(codi_py_hook_filter, step), CODI_PY_FIELD(codi_py_hook_filter, fn), CODI_PY_FIELD(codi_py_hook_filter, user),
};
#undef CODI_PY_SIZE
#undef CODI_PY_FIELD

int codi_py_layout_count(void);
const codi_py_field *codi_py_layout_at(int i);
const char *codi_py_version(void);
int codi_py_filtered_hook(void *user, const codi_hook_info *info, float *data);

int codi_py_layout_count(void) { return (int)(sizeof codi_py_fields / sizeof codi_py_fields[0]); }
const codi_py_field *codi_py_layout_at(int i) { return i >= 0 && i < codi_py_layout_count() ? &codi_py_fields[i] : NULL; }
const char *codi_py_version(void) { return CODI_LENS_VERSION; }

int codi_py_filtered_hook(void *user, const codi_hook_info *info, float *data) {
    const codi_py_hook_filter *f = (const codi_py_hook_filter *)user;
    if (!(f->points >> info->point & 1u) || (f->layer != CODI_ALL && f->layer != info->layer) ||
        (f->phase != CODI_ALL && f->phase != info->phase) || (f->step != CODI_ALL && f->step != info->step)) return 0;
    return f->fn(f->user, info, data);
}
