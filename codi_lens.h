/* codi_lens.h - run and instrument the CODI latent-reasoning Llama 3.2 in one C header.

   WHAT IT IS
   A pure-C99 (libc + libm; pthreads optional) engine for CODI ("Compressing Chain-of-Thought
   into Continuous Space via Self-Distillation", github.com/zhenyi4/codi): Llama 3.2 + LoRA +
   the `prj` projection that turns the last hidden state into the next input embedding.
   Every internal buffer is a plain float array you can read and write: the residual stream
   entering each layer at every position, the KV cache (keys after RoPE; codi_key_pre_rope
   rotates one back), the logits. Hooks at named points of the forward pass let you record,
   steer and patch.

   USE
   In exactly one C file:
       #define CODI_LENS_IMPLEMENTATION
       #include "codi_lens.h"
   Build: cc -O2 app.c -lm            (add -DCODI_THREADS -pthread for threads)

   QUICK START (examples/quickstart.c: a CODI question as text, its answer and one residual)
       char err[256], text[1024];
       codi_load_opts lo = codi_load_opts_default();
       codi_model *m = codi_load("models/codi-nano/codi_nano.bin", &lo, err, sizeof err);
       codi_tokenizer *t = m ? codi_tokenizer_load("models/codi-nano", err, sizeof err) : NULL;
       if (!t || codi_tokenizer_add_codi_tokens(m, t, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
       int32_t ids[512];                                 // BOS question bot
       int n = codi_prompt_from_text(m, t, "Tom has 3 bags with 4 apples each. How many apples?", 0, ids, 512);
       codi_state *s = codi_state_new(m, n + 6 + 64, 1);
       codi_run_opts ro = codi_run_opts_default(m);      // 6 latent steps, greedy answer
       ro.max_answer = 64;
       codi_run_result r;
       if (codi_run(m, s, ids, n, &ro, &r) != 0) { fprintf(stderr, "%s\n", s->error); return 1; }
       codi_decode(t, r.answer, r.n_answer, 1, text, sizeof text);
       float *h = codi_state_resid(s, 2, n);             // residual entering layer 2 at latent 1
       printf("%s (h[0] = %g)\n", text, h[0]);
       codi_state_free(s); codi_tokenizer_free(t); codi_model_free(m);

   STEERING AND PATCHING (>>steer; the spec format is documented at its declarations)
       codi_steer *st = codi_steer_load(m, "tests/data/steer/s1_z_add.json", err, sizeof err);
       codi_run_opts ro = codi_run_opts_default(m);
       if (!st || codi_steer_install(st, s, &ro)) ...;   // its hooks; ro.after_latent for KV-cache edits
       codi_run(m, s, ids, n, &ro, &r);                  // the run under {"edits": [...]}
       codi_state_clear_hooks(s); codi_steer_free(st);
   Mean vectors at the latent slots: codi_means_*. Seeded Gaussian draws: codi_rng_*.

   MANY RUNS AT ONCE (>>batch, the batched runner): codi_batch_submit queues whole CODI runs (prompt
   ids or a shared prefix state, each with its own latents, answer length, steering and hooks);
   codi_batch_run advances up to max_runs of them through one pass over the weights per step and
   hands each result to a callback: on a bandwidth-bound CPU, many runs for the price of one.

   CONFIGURATION MACROS (define before the #include that has CODI_LENS_IMPLEMENTATION)
       CODI_MALLOC(n) CODI_REALLOC(p,n) CODI_FREE(p)   allocator, all three or none
       CODI_ASSERT(x)                                 programmer-error check (default assert)
       CODI_THREADS                                   pthread pool for the matrix kernels
       CODI_NO_MMAP                                   read files into memory instead of mmap
       CODI_STATIC                                    make every function static
   Build switches (stb's STBI_NO_*: leave parts out; README has each one's compile time and size):
       CODI_NO_SIMD                                   only the portable C kernels (no SIMD paths; the
                                                      old name CODI_SCALAR still works)
       CODI_NO_TORCH                                  safetensors only: no zip or pickle reader; torch
                                                      checkpoints and params.pt fail with an error
                                                      naming the switch
       CODI_NO_RESEARCH                               the run and steering only: no tuned lenses,
                                                      activation datasets, probes, statistics or PCA

   SPEED: the matrix products run on one kernel path, chosen at run time from the CPU: amx, avx512
   or avx2 (x86-64, GCC/clang, plain `cc -O2` builds them), neon (AArch64), else scalar (Part I's
   portable C). CODI_KERNEL=scalar|avx2|avx512|avx512bf16|amx|neon in the environment (or
   codi_set_kernel) picks another; how each path works is at >>simd (Appendix B).

   WHAT IT DOES NOT DO
   No GPU, no training of the model, no sampling other than greedy, no quantization below
   bf16, no architectures other than Llama. It never executes code from a checkpoint: the
   pickle reader accepts only the globals torch.save emits for a state dict; every size, offset
   and count read from a file is overflow-checked, every zip entry read is CRC-32-verified
   (skip_crc skips it: ~5% of a 1B load), FIFOs and devices are refused before open(), and
   config.json values are range-checked with the field and file named. The tokenizer is
   byte-level BPE with Llama 3's split regex only (no normalizers, SentencePiece or WordPiece);
   a tokenizer.json it cannot reproduce exactly is refused, not approximated.

   LENSES AND ACTIVATION DATASETS (examples/lens.c; the codi lens / record / tune-lens commands)
       codi_lens_logits and codi_tuned_lens_logits read a residual through the unembedding;
       codi_top_k, codi_entropy, codi_rank_of and codi_number_tokens read the distribution;
       codi_lens_trainer_* trains a tuned lens with the tuned-lens library's recipe or the Latent
       Reasoning Sprint's; codi_acts_* writes activation datasets (layout at ">>acts" in the API).

   DIMENSIONS used in shape comments
       L layers, D model dim, F ffn dim, H heads, KVH kv heads, HD head dim, V vocab (with the
       CODI tokens), T positions (state capacity), C positions per pass, P prj hidden dim.

   CONTENTS (grep for ">>name"; lines in each). Read >>reference first (the whole model in one
   plain function, as llama2.c's run.c), then Part I: >>forward (the same pass, fast) and >>codi
   (the latent loop). CODI_KERNEL=scalar runs Part I's own kernels; the fast paths of Appendix B
   are reached only through the kernel table (>>interfaces).
       >>api 1014  >>util 103  >>interfaces 106
     PART I. THE MODEL (1037 lines):
       >>kernels 144  >>state 209  >>reference 127  >>forward 376  >>codi 181
     PART II. THE INSTRUMENTS (2381 lines):
       >>steer 696  >>unicode 279  >>tokenizer 922  >>lens 484
     PART III. RESEARCH (2210 lines):
       >>lenstrain 185  >>io 309  >>torchsave 100  >>lensfiles 132  >>acts 379  >>probe 294
       >>stats 311  >>pca 500
     APPENDIX A. FORMATS (1802 lines):
       >>json 255  >>files 108  >>tensors 78  >>safetensors 154  >>zip 121  >>pickle 472
       >>loading 614
     APPENDIX B. FAST PATHS (2030 lines):
       >>threads 104  >>simd 1523  >>batch 401

   THREADS: a loaded codi_model is read-only and may be shared; each thread owns its codi_state.
   A codi_tokenizer is read-only once loaded (add tokens before sharing it).
*/
#ifndef CODI_LENS_H
#define CODI_LENS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CODI_STATIC) && defined(__GNUC__)
#define CODI_API static __attribute__((unused))   /* no -Wunused-function for the calls you skip */
#elif defined(CODI_STATIC)
#define CODI_API static
#else
#define CODI_API extern
#endif

/* >>api -------------------------------------------------------------------------------- */

/* Element types: weights are F32, BF16 or F16; safetensors files may also hold the others. */
enum { CODI_F32 = 0, CODI_BF16 = 1, CODI_F16 = 2, CODI_I32 = 3, CODI_U8 = 4, CODI_F64 = 5, CODI_I64 = 6 };

/* The model's shape and CODI settings (HF config.json + CODI token ids). */
typedef struct {
    int dim;            /* D (hidden_size) */
    int ffn_dim;        /* F (intermediate_size) */
    int n_layers;       /* L */
    int n_heads;        /* H */
    int n_kv_heads;     /* KVH */
    int head_dim;       /* HD */
    int vocab;          /* V: rows of the embedding table, CODI tokens included */
    int prj_dim;        /* P: prj hidden size, 0 when the checkpoint has no prj */
    float norm_eps;     /* RMSNorm eps */
    float ln_eps;       /* prj LayerNorm eps */
    float rope_theta;
    int rope_llama3;    /* 1: llama3 frequency scaling with the four values below */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    int bos_id;         /* -1: config.json gives none and Llama 3's 128000 is outside the vocabulary */
    int eos_ids[8];     /* generation stops at any of these (ids inside the vocabulary) */
    int n_eos;
    int pad_id, bot_id, eot_id;   /* CODI tokens: base vocab + 0, 1, 2; -1 for a plain Llama (no prj, no base_vocab) */
    float lora_scale;   /* alpha / r used when merging */
    int max_positions;  /* max_position_embeddings (the trained context); 0 when config.json gives none */
} codi_config;

enum { CODI_COMPUTE_F32 = 0, CODI_COMPUTE_BF16 = 1 };   /* codi_load_opts.compute */

/* Load options; start from codi_load_opts_default(). */
typedef struct {
    const char *base;   /* Hugging Face Llama directory the checkpoint is layered over, or NULL */
    int exact;          /* 1: merged weights kept in f32; 0: merged weights rounded to bf16 */
    float lora_scale;   /* alpha / r; 0.25 for the released CODI Llama (32 / 128) */
    int head_dim;       /* > 0: used instead of config.json's head_dim (or hidden_size / heads, or 64) */
    int base_vocab;     /* > 0: pad/bot/eot = base_vocab + 0/1/2 (default: V - 3 for CODI) */
    int n_threads;      /* threads for merging LoRA at load (CODI_THREADS builds; default 1) */
    int skip_crc;       /* 1: do not verify the CRC-32 of a .bin's zip entries (default 0: verify) */
    int compute;        /* CODI_COMPUTE_F32, or CODI_COMPUTE_BF16: products with bf16 weights take x rounded to
                           bf16 (vdpbf16ps; needs AVX512-BF16). Default: CODI_COMPUTE from the environment
                           ("f32" | "bf16"), else f32 */
} codi_load_opts;

/* A weight matrix W [rows = out features, cols = in features], row-major. */
typedef struct {
    int dtype;          /* CODI_F32 or CODI_BF16 */
    int rows, cols;
    const void *data;   /* [rows, cols] of dtype; may point into a mapped file */
} codi_matrix;

typedef struct {
    float *attn_norm;             /* [D] input_layernorm */
    codi_matrix wq, wk, wv, wo;   /* [H*HD, D], [KVH*HD, D], [KVH*HD, D], [D, H*HD] */
    float *mlp_norm;              /* [D] post_attention_layernorm */
    codi_matrix gate, up, down;   /* [F, D], [F, D], [D, F] */
} codi_layer;

typedef struct {
    codi_matrix embed;            /* [V, D] token embeddings */
    codi_layer *layers;           /* [L] */
    float *final_norm;            /* [D] */
    codi_matrix lm_head;          /* [V, D]; same data as embed when tied */
    codi_matrix prj1, prj3;       /* [P, D], [D, P] (f32); data NULL without prj */
    float *prj1_b, *prj3_b;       /* [P], [D] */
    float *prj_ln_w, *prj_ln_b;   /* [D], [D] LayerNorm */
} codi_weights;

/* Where one loaded tensor came from (for `codi info` and the --base report). */
typedef struct {
    char name[128];     /* canonical name, e.g. "model.layers.3.mlp.up_proj.weight" */
    int source;         /* 0: checkpoint, 1: base model */
    int dtype;          /* as stored */
    int ndim;
    int64_t shape[4];
} codi_tensor_info;

typedef struct codi_model {
    codi_config config;
    codi_weights w;
    codi_tensor_info *tensors;    /* [n_tensors] every tensor read, with its source */
    int n_tensors;
    int exact;                    /* weights in f32 (1) or bf16 (0) */
    int compute;                  /* CODI_COMPUTE_F32 or CODI_COMPUTE_BF16, from the load options */
    void *internal;               /* mapped files and owned buffers */
} codi_model;

/* Hook points, in the order a position meets them; after "TL:" TransformerLens's name for the same
   tensor (HookedTransformer on a Llama; l the layer), which steering specs also accept as "at". */
enum {
    CODI_HOOK_EMBED = 0,  /* input embedding (token row or latent vector) [D]         TL: hook_embed */
    CODI_HOOK_RESID,      /* residual entering layer `layer` [D]; layer == L: last layer output
                                                   TL: blocks.l.hook_resid_pre; L: blocks.(L-1).hook_resid_post */
    CODI_HOOK_KEY,        /* key after RoPE written to the cache at layer [KVH*HD]     TL: blocks.l.attn.hook_rot_k */
    CODI_HOOK_VALUE,      /* value written to the cache at layer [KVH*HD]              TL: blocks.l.attn.hook_v */
    CODI_HOOK_ATTN_OUT,   /* attention output (after o_proj) before it is added [D]    TL: blocks.l.hook_attn_out */
    CODI_HOOK_MLP_OUT,    /* MLP output before it is added [D]                         TL: blocks.l.hook_mlp_out */
    CODI_HOOK_FINAL,      /* final-norm hidden state: what lm_head and prj read [D]    TL: none (HF: model.norm's output;
                                                   TL's ln_final.hook_normalized is x / rms, before the weight) */
    CODI_HOOK_COUNT
};

/* Phases the CODI helpers set in codi_state.phase. */
enum { CODI_PHASE_PREFILL = 0, CODI_PHASE_LATENT = 1, CODI_PHASE_ANSWER = 2 };

typedef struct {
    int point;          /* CODI_HOOK_* */
    int layer;          /* layer index (CODI_HOOK_EMBED: -1; FINAL: L) */
    int pos;            /* absolute position */
    int phase, step;    /* codi_state.phase and .step at the call (latent step k = 1..N) */
    int size;           /* floats in the view */
} codi_hook_info;

/* A hook may read and modify data[0..size). Return 0 to go on; any other value stops the
   forward pass, which then fails with that code in its error message. */
typedef int (*codi_hook_fn)(void *user, const codi_hook_info *info, float *data);

#define CODI_MAX_HOOKS 16

typedef struct codi_state {
    int max_pos;        /* T: positions this state can hold */
    int n_pos;          /* positions processed so far */
    int chunk;          /* C: positions per pass through the weights */
    int n_layers, dim, n_kv_heads, head_dim, vocab;  /* copied from the model's config */
    float *resid;       /* [L+1, T, D] residual entering layer l; l = L: last layer output */
    float *key_cache;   /* [L, KVH, T, HD] keys after RoPE (as HF caches them) */
    float *value_cache; /* [L, KVH, T, HD] */
    float *final_hidden;/* [D] final-norm hidden state of the last position */
    float *logits;      /* [V] logits of the last position */
    int phase, step;    /* reported to hooks; set by the CODI helpers */
    codi_hook_fn hooks[CODI_MAX_HOOKS];
    void *hook_user[CODI_MAX_HOOKS];
    int n_hooks;
    char error[256];    /* why the last call on this state failed */
    void *internal;     /* scratch buffers and the thread pool */
} codi_state;

/* How codi_run drives one CODI question (start from codi_run_opts_default). */
typedef struct {
    int n_latent;       /* latent steps (default 6; 0 allowed) */
    int max_answer;     /* answer tokens at most (default 256) */
    int stop_at_eos;    /* 1: stop after an eos id (default); 0: always max_answer tokens */
    int feed_eot;       /* 1: feed eot before the answer (default) */
    float *answer_logits;  /* optional [max_answer, V] out: logits of every answer step */
    float *latent_logits;  /* optional [n_latent+1, V] out: lm_head(final) at bot + latents */
    float *latents;        /* optional [n_latent+1, D] out: z_1..z_(N+1) (the last is not fed) */
    void (*on_token)(void *user, int32_t id);  /* optional: called with each answer token as it comes */
    void *on_token_user;
    /* optional: called after the prefill (k = 0) and after each latent step k, before the next
       input; nonzero fails the run. KV-cache edits happen here (codi_steer_install). */
    int (*after_latent)(void *user, codi_state *s, int k, int n_latent);
    void *after_latent_user;
} codi_run_opts;

typedef struct {
    int32_t answer[1024]; /* greedy answer tokens (eos included when it came) */
    int n_answer;
    int prompt_len;       /* T0: positions of the prompt (bot included) */
} codi_run_result;

CODI_API codi_load_opts codi_load_opts_default(void);
/* Loads a CODI checkpoint (pytorch_model.bin or .safetensors), a Hugging Face Llama directory,
   or a directory holding exactly one .bin / .safetensors, optionally over opts->base. Returns
   NULL and a message in err on failure. */
CODI_API codi_model *codi_load(const char *path, const codi_load_opts *opts, char *err, size_t errsz);
CODI_API void codi_model_free(codi_model *m);

/* A state for up to max_pos positions, with n_threads workers (1 without CODI_THREADS).
   NULL when out of memory. */
CODI_API codi_state *codi_state_new(const codi_model *m, int max_pos, int n_threads);
/* The same with passes of at most chunk positions (1..max_pos): less scratch, for states that are
   only copied from or stepped one position at a time (a sweep's prefixes). */
CODI_API codi_state *codi_state_new_chunked(const codi_model *m, int max_pos, int n_threads, int chunk);
CODI_API void codi_state_free(codi_state *s);
CODI_API void codi_state_reset(codi_state *s);                 /* n_pos = 0, hooks kept */
/* Copies src's positions, caches, logits and phase into dst (same model, dst->max_pos >=
   src->n_pos): fork a run after a shared prefix. Returns 0, or -1 with dst->error. */
CODI_API int codi_state_copy(const codi_model *m, codi_state *dst, const codi_state *src);
/* Pointer to the residual entering layer l (l = L: last layer output) at position pos. */
CODI_API float *codi_state_resid(codi_state *s, int layer, int pos);
/* Pointer to the cached key / value [HD] of layer, kv head, position. */
CODI_API float *codi_state_key(codi_state *s, int layer, int kv_head, int pos);
CODI_API float *codi_state_value(codi_state *s, int layer, int kv_head, int pos);
/* RoPE exactly as the forward applies it (HF's rotate_half pairs (j, j + HD/2), angle pos *
   inv_freq in f32, llama3 frequency scaling when configured): rotates n_vec head vectors v
   [n_vec, HD] in place to position pos, or back from it with inverse = 1 (the transpose). */
CODI_API void codi_rope_rotate(const codi_model *m, int pos, int inverse, float *v, int n_vec);
/* The cached key of layer, kv head, position rotated back to before RoPE, into out [HD]: W_k
   applied to the attention-normed residual entering layer (TransformerLens' hook_k; the cache,
   codi_state_key, holds hook_rot_k), up to f32 rounding; a KEY edit made at the cache write is
   in it. 0, or -1 with s->error when an index is out of range or pos was not processed. */
CODI_API int codi_key_pre_rope(const codi_model *m, codi_state *s, int layer, int kv_head, int pos, float *out);
CODI_API int codi_state_add_hook(codi_state *s, codi_hook_fn fn, void *user); /* -1 if full */
CODI_API void codi_state_clear_hooks(codi_state *s);

/* The forward pass: appends n positions, given as token ids or as embedding vectors
   [n, D] (exactly one non-NULL). Fills s->logits and s->final_hidden for the last position,
   and logits_out [n, V] for every position when not NULL. Returns 0, or -1 with s->error. */
CODI_API int codi_forward(const codi_model *m, codi_state *s, const int32_t *tokens,
                          const float *embeds, int n, float *logits_out);

/* The same pass written plainly (>>reference): one position at a time, naive loops, no threads or
   SIMD; the same hooks, state buffers and errors as codi_forward, to read and to check against. */
CODI_API int codi_forward_reference(const codi_model *m, codi_state *s, const int32_t *tokens,
                                    const float *embeds, int n, float *logits_out);

/* Batched decode: one new position for each of n independent sequences of this model (states
   with their own caches, positions, hooks, phase and step; no state twice), through one pass over
   the weights per group of states[0]->chunk: tokens[n] or embeds [n, D] (exactly one non-NULL).
   Fills each state's logits and final_hidden. Scratch and threads are states[0]'s, so give it the
   largest max_pos. Returns 0, or -1 with the reason in the error of the state it concerns. */
CODI_API int codi_forward_batch(const codi_model *m, codi_state *const *states, const int32_t *tokens,
                                const float *embeds, int n);

/* Kernel paths for the matrix products: "scalar" (portable C), "avx2" (AVX2+FMA),
   "avx512" (AVX-512F), "avx512bf16" (vdpbf16ps on x split into bf16 hi + lo parts; bf16
   weights only, f32 weights use avx512), "amx" (AMX tiles for 9+ positions, x split the same way;
   Linux grants the tile state; else as avx512), "neon" (AArch64). The default is the fastest
   this CPU runs (avx512bf16 is opt-in: no faster than avx512); CODI_KERNEL=name in the environment,
   or codi_set_kernel, picks one. */
CODI_API const char *codi_kernel_name(void);
/* Uses path `name` from now on, process-wide (not while a pass runs). 0, or -1 if this build or
   CPU lacks it. */
CODI_API int codi_set_kernel(const char *name);
/* The paths this build and CPU can run, into names[0..cap); returns how many there are. */
CODI_API int codi_kernels_available(const char **names, int cap);
/* How many of the model's weight matrices (embeddings, every layer's, lm_head, prj) start off a
   64-byte boundary; *n_matrices (if not NULL) = how many there are. Misaligned weights (a mapped
   file whose tensors are not 64-byte aligned) run correctly, but each 64-byte load of a row then
   spans two cache lines (decode measured 10-15% slower); `codi export --merged` writes aligned. */
CODI_API int codi_weights_misaligned(const codi_model *m, int *n_matrices);

/* CODI's projection: z [D] = LayerNorm(W3 gelu(W1 h + b1) + b3), h [D] a final-norm hidden. */
CODI_API int codi_project(const codi_model *m, const float *h, float *z);   /* 0, or -1 without prj */
/* One latent step: z = prj(s->final_hidden), fed at the next position. z_out [D] may be NULL. */
CODI_API int codi_latent_step(const codi_model *m, codi_state *s, float *z_out);
/* argmax of logits [V] over every id except the last (CODI's logits[:, :-1]). */
CODI_API int codi_argmax_answer(const codi_model *m, const float *logits);
CODI_API codi_run_opts codi_run_opts_default(const codi_model *m);
/* A whole CODI question: prefill ids (ending with bot), n_latent steps, eot, greedy answer.
   Resets s first. Equal to codi_run_latents then codi_run_answer; call those two to act on the
   state between the latent loop and the answer (KV-cache steering). */
CODI_API int codi_run(const codi_model *m, codi_state *s, const int32_t *ids, int n,
                      const codi_run_opts *o, codi_run_result *r);
CODI_API int codi_run_latents(const codi_model *m, codi_state *s, const int32_t *ids, int n,
                              const codi_run_opts *o, codi_run_result *r);
CODI_API int codi_run_answer(const codi_model *m, codi_state *s, const codi_run_opts *o, codi_run_result *r);
/* Prompt ids from question ids: BOS q... bot (recipe 0, zhenyi4 remove_eos) or
   BOS q... <|eot_id|> bot (recipe 1, Latent Reasoning Sprint). Returns the count, or -1
   if out_cap is too small or the model cannot form this recipe (codi_prompt_check says why). */
CODI_API int codi_prompt_ids(const codi_model *m, int recipe, const int32_t *q, int nq, int32_t *out, int out_cap);
/* 0 if the model has the ids recipe needs (BOS, bot; recipe 1 also <|eot_id|> 128009), or -1
   with what is missing and what to do in err. */
CODI_API int codi_prompt_check(const codi_model *m, int recipe, char *err, size_t errsz);
/* The last number in text (commas removed) into *out; returns 1 if one was found. */
CODI_API int codi_extract_answer(const char *text, double *out);

/* ---- the batched runner (>>batch): many CODI runs through one pass per step ----
   B independent runs (each with its own state, prompt or prefix, latents, answer length, steering
   and hooks) advance together, one pass over the weights per step; finished runs leave and queued
   ones join (continuous batching); new prompts are prefilled in the same passes. Results equal
   codi_run's (logits within 1e-4; a batch of 1 is bit-identical). How it works: at codi_batch_step.
       codi_batch *b = codi_batch_new(m, 32, max_pos, n_threads);
       codi_batch_request q = { 0 }; q.ids = ids; q.n_ids = n; q.opts = codi_run_opts_default(m);
       codi_batch_submit(b, &q);  ...  codi_batch_run(b, on_done, ctx);  codi_batch_free(b); */
typedef struct codi_batch codi_batch;

typedef struct {
    const int32_t *ids; int n_ids;   /* the prompt, ending with bot (copied at submit); or NULL and: */
    const codi_state *prefix;        /* a state after its prefill and l latent steps (its phase and step
                                        say l): the run starts from a copy, taken when it joins (keep
                                        the prefix unchanged until then), at latent step l + 1 */
    codi_run_opts opts;              /* as codi_run's; n_latent counts the prefix's l too; the out
                                        pointers (answer_logits, latent_logits, latents) are per run */
    const struct codi_steer *steer;  /* optional: installed on the run's state (keep it until the run ends) */
    /* optional: called when the run joins, after the steer's install, to add hooks to s or set o;
       nonzero fails the run */
    int (*setup)(void *user, codi_state *s, codi_run_opts *o);
    void *user;                      /* handed back with the result and to setup */
} codi_batch_request;

typedef struct {
    void *user;                      /* the request's */
    long index;                      /* the request's submission order, from 0 */
    int status;                      /* 0, or -1: the run failed (error says why; result is partial) */
    const char *error;
    const codi_run_result *result;   /* answer, n_answer, prompt_len (T0) */
    codi_state *state;               /* the run's state at its end: valid during the callback only */
} codi_batch_result;

/* Called for each run as it ends; nonzero stops codi_batch_step / codi_batch_run (they return -1). */
typedef int (*codi_batch_done_fn)(void *user, const codi_batch_result *r);

/* Up to max_runs runs at once, each of up to max_pos positions (prompt + latents + eot + answer);
   n_threads for the products (CODI_THREADS builds). NULL when out of memory or an argument is out
   of range (max_runs 1..4096, max_pos >= 1). */
CODI_API codi_batch *codi_batch_new(const codi_model *m, int max_runs, int max_pos, int n_threads);
/* Queues a run (checked now: ids, lengths, prefix, room in max_pos). 0, or -1 with codi_batch_error. */
CODI_API int codi_batch_submit(codi_batch *b, const codi_batch_request *req);
/* Queued runs join free slots, then one pass advances every active run (a prefill chunk, a latent
   step or an answer token each); runs that end go to done. Returns the runs still active or
   queued (0: all done), or -1 with codi_batch_error (out of memory, or done stopped it). */
CODI_API int codi_batch_step(codi_batch *b, codi_batch_done_fn done, void *user);
/* codi_batch_step until every submitted run has ended; 0, or -1 with codi_batch_error. */
CODI_API int codi_batch_run(codi_batch *b, codi_batch_done_fn done, void *user);
CODI_API int codi_batch_pending(const codi_batch *b);    /* runs active or queued */
CODI_API const char *codi_batch_error(const codi_batch *b);
CODI_API void codi_batch_free(codi_batch *b);

/* Writes the loaded model (LoRA merged, bf16 or f32 as loaded) as one .safetensors file with
   Hugging Face Llama names plus prj, and its config in the metadata ("codi_config"), so that
   codi_load(path) maps it without merging and computes the same results. 0, or -1 with err. */
CODI_API int codi_save_merged(const codi_model *m, const char *path, char *err, size_t errsz);

/* Logit lens: logits [V] = lm_head(final_norm(resid [D])). Returns 0, or -1 out of memory. */
CODI_API int codi_lens_logits(const codi_model *m, const float *resid, float *logits);
/* The logit lens at residual index layer (0..L) and a processed position of s; -1 with
   s->error when layer or pos is out of range. */
CODI_API int codi_lens_at(const codi_model *m, codi_state *s, int layer, int pos, float *logits);

/* ---- steering and patching (>>steer): a JSON spec of edits -> an intervention set ---------

   A spec is {"edits": [EDIT, ...]} (optional "name", "description"); each EDIT is
     "at":       "latent_input" (z_k before it is fed), "resid" (entering "layer"; L = last output),
                 "final", "attn_out", "mlp_out", "key" / "value" (as written to the cache; post-RoPE
                 keys), or "kv_cache" (entries already cached, edited once at a moment of the run)
     "step":     latent step k >= 1 (implies phase "latent"); kv_cache: after latent k, at its slot
     "phase":    "prefill" | "latent" | "answer" | "all" (default "all"; latent_input: "latent")
     "layer":    int or "all" (needed except for latent_input and final)
     "head":     kv head, int or "all" (key, value, kv_cache; default "all")
     "positions":kv_cache: "latents" (every latent slot cached at that moment, default), "latent:K",
                 "last" (the last cached slot), or a list of absolute positions
     "when":     kv_cache: "after_latents" (before eot, default), "after_latent:K" or "after_prefill"
                 (Belitsky et al. 2025's KV steering: "after_prefill" at "last", values only)
     "op":       "add" (x += alpha v, default: steering) or "set" (x := v: patching; an alpha other
                 than 1 blends, x += alpha (v - x))
     "alpha":    default 1; 0 leaves every bit as it was
     "vector":   "FILE.safetensors:TENSOR" (FILE relative to the spec's folder): [D] (or [L+1, D] for
                 resid / [L, D] for attn_out, mlp_out with one row per layer); key / value: [HD]
                 (every head), [KVH, HD] or [L, KVH, HD]
     "key_vector", "value_vector": kv_cache's vectors (either or both), shapes as for key / value
     "random":   instead of a vector: {"seed": S, and one of "norm": X (a Gaussian direction of
                 norm X), "norm_of": "FILE:TENSOR" (same shape and norm as that tensor),
                 "mean_std_of": "FILE:TENSOR" (Gaussian with that tensor's scalar mean and std;
                 with "per_dim": true its rows are samples and each column gets its own), or
                 "mean_std_of": "self" (the edited vector's own mean and std, each time: the
                 sprint's noise control; fixed N(0,1) draws scaled to them)};
                 kv_cache draws keys from S and values from S + 1
   Example: {"edits": [{"at": "latent_input", "step": 3, "alpha": 2.0, "vector": "v.safetensors:diff_3_5"}]}
   TransformerLens names are accepted for "at", with the layer in the name (then no "layer" field):
   "blocks.8.hook_resid_pre" is at "resid", layer 8; the others are beside the values below. Names
   without an equivalent here (hook_embed, ln_final.hook_normalized, attn.hook_k before RoPE,
   hook_resid_mid, hook_q, hook_z, hook_pattern, mlp.hook_pre, ...) are refused with the reason. */
enum { CODI_AT_LATENT_INPUT = 0, /* z_k before it is fed: CODI_HOOK_EMBED in the latent phase   TL: none */
       CODI_AT_RESID,            /* CODI_HOOK_RESID        TL: blocks.l.hook_resid_pre, blocks.l.hook_resid_post (= l + 1) */
       CODI_AT_FINAL,            /* CODI_HOOK_FINAL        TL: none (see CODI_HOOK_FINAL) */
       CODI_AT_ATTN_OUT,         /* CODI_HOOK_ATTN_OUT     TL: blocks.l.hook_attn_out */
       CODI_AT_MLP_OUT,          /* CODI_HOOK_MLP_OUT      TL: blocks.l.hook_mlp_out */
       CODI_AT_KEY,              /* CODI_HOOK_KEY          TL: blocks.l.attn.hook_rot_k */
       CODI_AT_VALUE,            /* CODI_HOOK_VALUE        TL: blocks.l.attn.hook_v */
       CODI_AT_KV_CACHE,         /* cached K / V edited at a moment of the run   TL: none (no cache hooks) */
       CODI_AT_COUNT };
enum { CODI_EDIT_ADD = 0, CODI_EDIT_SET = 1 };
#define CODI_ALL (-1)      /* every step / phase / layer / head */
#define CODI_LAST (-2)     /* kv_cache positions: the last cached slot at the moment */

/* One edit as the library holds it (start from codi_edit_default). Vectors are flat floats:
   activations D, or one row per layer index; key / value HD, KVH*HD or L*KVH*HD. */
typedef struct {
    int at;                 /* CODI_AT_* */
    int phase, step, layer, head;     /* CODI_PHASE_* / k / index, or CODI_ALL */
    int op;                 /* CODI_EDIT_ADD or CODI_EDIT_SET */
    float alpha;
    int when;               /* kv_cache: after latent step `when`; CODI_ALL: after the last */
    int pos_latent;         /* kv_cache: CODI_ALL every latent slot so far, CODI_LAST the last cached slot,
                               k > 0 latent k's slot, 0 use positions */
    const int *positions; int n_positions;              /* kv_cache absolute positions */
    const float *vector; long vector_len;               /* every other edit */
    int noise_self;         /* 1: vector holds N(0, 1) draws, applied as mean(x) + std(x) * vector */
    const float *key_vector, *value_vector; long kv_len; /* kv_cache (either may be NULL) */
} codi_edit;

/* An intervention set: edits applied in order, vectors owned (expanded to one row per layer for
   key / value / kv_cache: [L, KVH*HD]). Read-only once built: share it between threads. */
typedef struct codi_steer {
    codi_edit *edits;
    int n_edits;
    char name[128];         /* the spec's "name" (or the file name) */
    int n_layers, dim, n_kv_heads, head_dim;   /* the model it was checked against */
} codi_steer;

/* Seeded Gaussian numbers, identical on every platform: SplitMix64 (Steele, Lea, Flood 2014)
   gives 53-bit uniforms, Marsaglia's polar method turns pairs of them into normals (double). */
typedef struct { uint64_t state; double spare; int has_spare; } codi_rng;
CODI_API void codi_rng_seed(codi_rng *r, uint64_t seed);
CODI_API double codi_rng_uniform(codi_rng *r);      /* [0, 1) */
CODI_API double codi_rng_normal(codi_rng *r);       /* mean 0, std 1 */
/* out [n]: a seeded Gaussian direction scaled to L2 norm `norm` (random controls of a vector's norm). */
CODI_API void codi_rng_direction(codi_rng *r, float *out, long n, double norm);
/* "FILE:TENSOR" (FILE relative to base_dir, or as given when NULL) as floats (CODI_FREE them): *n
   values, the last dimension in *last; NULL with a message in err. */
CODI_API float *codi_vector_read(const char *ref, const char *base_dir, long *n, long *last, char *err, size_t errsz);

/* A valid edit as returned once given a vector: add vector x alpha (1) to the latent loop's input
   at every latent step (at CODI_AT_LATENT_INPUT; phase and step CODI_ALL). A "step" k implies the
   latent phase; at CODI_AT_LATENT_INPUT phase CODI_ALL means the latent phase. */
CODI_API codi_edit codi_edit_default(void);
/* alpha x vector [D] added to latent step k's input (k >= 1, or CODI_ALL: every step). */
CODI_API codi_edit codi_edit_latent_add(int step, const float *vector, long len, float alpha);
/* alpha x vector [D] added to the residual entering layer `layer` (0..L) at latent step k's position
   (k >= 1, or CODI_ALL: every latent step). */
CODI_API codi_edit codi_edit_resid_add(int layer, int step, const float *vector, long len, float alpha);
CODI_API codi_steer *codi_steer_new(const codi_model *m);   /* an empty set; NULL out of memory */
/* Checks e against the model (ranges, vector sizes, finite values) and appends a copy; 0, or -1
   with "edit N: field: why" in err. */
CODI_API int codi_steer_add(codi_steer *st, const codi_edit *e, char *err, size_t errsz);
/* A spec's JSON text (base_dir: where relative FILEs are, NULL = current folder) / a spec file.
   NULL with "edit N: \"field\": why" in err. */
CODI_API codi_steer *codi_steer_parse(const codi_model *m, const char *json, size_t len, const char *base_dir,
                                      char *err, size_t errsz);
CODI_API codi_steer *codi_steer_load(const codi_model *m, const char *path, char *err, size_t errsz);
/* The random control of st: every vector replaced by a seeded Gaussian direction of the same norm
   (per row). NULL out of memory. */
CODI_API codi_steer *codi_steer_random_like(const codi_steer *st, uint64_t seed);
CODI_API void codi_steer_free(codi_steer *st);
/* Installs st's hooks in s and, for kv_cache edits, sets o->after_latent (o may be NULL when
   there are none); checks steps against o->n_latent. 0, or -1 with s->error. Remove with
   codi_state_clear_hooks and a fresh codi_run_opts. */
CODI_API int codi_steer_install(const codi_steer *st, codi_state *s, codi_run_opts *o);
/* The kv_cache edits due after latent step k (user: the codi_steer): the codi_run_opts.after_latent
   that codi_steer_install sets; call it yourself when you drive the latent loop by hand. */
CODI_API int codi_steer_after_latent(void *user, codi_state *s, int k, int n_latent);

/* Mean activations at the latent slots over many runs (the sprint's mean vectors): after each
   codi_run, codi_means_add reads the final-normed hidden state and the cached K / V at latent
   k's slot (position T0 + k - 1), k = 1..N. */
typedef struct {
    int n_latent, dim, kv_size;   /* kv_size = L * KVH * HD */
    long count;
    double *final;                /* [N, D] sums */
    double *key, *value;          /* [N, L, KVH, HD] sums */
} codi_means;
CODI_API int codi_means_init(codi_means *a, const codi_model *m, int n_latent);  /* 0 or -1 */
CODI_API int codi_means_add(codi_means *a, const codi_model *m, codi_state *s, int prompt_len); /* 0, or -1 with s->error */
/* Means so far: final [N, D], key / value [N, L, KVH, HD] (each may be NULL). */
CODI_API void codi_means_get(const codi_means *a, float *final, float *key, float *value);
CODI_API void codi_means_free(codi_means *a);

/* ---- safetensors files (>>io): what numpy / torch read and write ------------------------ */

/* One tensor to write: data [shape] of dtype (CODI_BF16 data is uint16_t bf16 bits). */
typedef struct {
    const char *name;
    int dtype;           /* CODI_F32, CODI_BF16, CODI_F16, CODI_I32, CODI_U8, CODI_F64, CODI_I64 */
    const void *data;
    int ndim;            /* 0..8 */
    int64_t shape[8];
} codi_safetensors_entry;
/* Writes tensors as a .safetensors file (to PATH.tmp, then renamed over PATH). metadata is NULL or
   {key, value, key, value, ..., NULL}: strings for the header's __metadata__ ("format": "pt" is
   added unless a "format" is given). Names and metadata are JSON-escaped; sizes are overflow-
   checked. Returns 0, or -1 with a message in err. */
CODI_API int codi_write_safetensors(const char *path, const codi_safetensors_entry *e, int n, const char *const *metadata,
                                    char *err, size_t errsz);
/* The same file written to an open stream (e.g. a temporary file the caller renames); the stream
   is flushed, not closed. 0, or -1 with a message in err (a failed write included). */
CODI_API int codi_write_safetensors_file(FILE *fp, const codi_safetensors_entry *e, int n, const char *const *metadata,
                                         char *err, size_t errsz);

/* s as a JSON string literal, quotes included (", \\ and control characters escaped; other bytes,
   UTF-8 included, as they are) into out[0..cap), NUL-terminated when cap > 0. Returns the length
   the whole literal needs, as snprintf does (the output is cut when that is >= cap). The one JSON
   escaper: every JSON file the library and the CLI write quotes its strings with it. */
CODI_API size_t codi_json_quote(char *out, size_t cap, const char *s);
/* The same literal written to f; 0, or -1 when out of memory or the write fails. */
CODI_API int codi_json_write_string(FILE *f, const char *s);

/* A .safetensors file opened for reading (mapped; names kept exactly as in the file). */
typedef struct codi_safetensors_file codi_safetensors_file;
typedef struct {
    const char *name;
    char dtype[8];       /* as spelled in the file: "F32", "BF16", "F16", "F64", "I32", "I64", "U8", ... */
    int ndim;
    int64_t shape[8];
    size_t numel;
    const void *data;    /* raw little-endian bytes inside the mapping (may be unaligned) */
} codi_safetensors_tensor;
/* NULL with a message in err when the file is missing or not a valid safetensors file. */
CODI_API codi_safetensors_file *codi_safetensors_open(const char *path, char *err, size_t errsz);
CODI_API void codi_safetensors_close(codi_safetensors_file *f);
CODI_API int codi_safetensors_count(const codi_safetensors_file *f);                                   /* tensors in the file */
CODI_API int codi_safetensors_tensor_at(const codi_safetensors_file *f, int i, codi_safetensors_tensor *out);   /* 0, or -1 out of range */
CODI_API int codi_safetensors_find(const codi_safetensors_file *f, const char *name, codi_safetensors_tensor *out); /* 0, or -1 if absent */
/* Tensor name converted to float32 into out[0..cap) (F32, BF16, F16, F64, I32, I64, U8). Returns its
   element count, or -1 with a message (absent, other dtype, cap too small). */
CODI_API long codi_safetensors_read_f32(const codi_safetensors_file *f, const char *name, float *out, size_t cap, char *err, size_t errsz);
/* A string of the header's __metadata__ object, or NULL. Valid until codi_safetensors_close. */
CODI_API const char *codi_safetensors_metadata(const codi_safetensors_file *f, const char *key);

/* ---- tokenizer (>>tokenizer): Hugging Face tokenizer.json or tiktoken tokenizer.model ---- */

enum { CODI_TOK_NONE = 0, CODI_TOK_BPE, CODI_TOK_ADDED, CODI_TOK_SPECIAL };  /* codi_tokenizer.kind */

/* A byte-level BPE tokenizer (Llama 3's, or any tokenizer.json of that structure). Token ids
   map to raw bytes; text is UTF-8. Read-only once loaded (codi_tokenizer_add_token aside):
   share it between threads freely. */
typedef struct codi_tokenizer {
    int n_ids;               /* ids 0..n_ids-1; an id no token uses has kind CODI_TOK_NONE */
    char *bytes;             /* every token's raw bytes, back to back */
    uint32_t *offset;        /* [n_ids] where token id starts in bytes */
    uint32_t *length;        /* [n_ids] its length in bytes */
    unsigned char *kind;     /* [n_ids] CODI_TOK_*: BPE vocabulary, added token, added special token */
    int bos_id;              /* begin-of-text id, -1 if unknown */
    int max_token_len;       /* longest token in bytes */
    int n_merges;            /* merges read (0 for tiktoken files: a pair merges into the token it spells) */
    void *internal;          /* lookup tables */
} codi_tokenizer;

/* Loads a tokenizer.json (a directory holding one is fine too) or a tiktoken-style
   tokenizer.model ("base64 rank" lines; Llama 3's 256 special tokens are added after rank
   127999 when it has 128,000 ranks). NULL and a message in err on failure. */
CODI_API codi_tokenizer *codi_tokenizer_load(const char *path, char *err, size_t errsz);
CODI_API void codi_tokenizer_free(codi_tokenizer *t);
/* Adds text as an added token with id (id < 0: the next free id), special (1) or not; returns
   the id, the existing id if text is already an added token with it, or -1 with a message. */
CODI_API int codi_tokenizer_add_token(codi_tokenizer *t, const char *text, int id, int special, char *err, size_t errsz);
/* The id of a token given by its exact bytes (vocabulary or added), or -1. */
CODI_API int codi_token_id(const codi_tokenizer *t, const char *bytes, size_t len);

/* Text -> ids, as Hugging Face's encode(text, add_special_tokens=add_bos). add_bos: prepend
   (and append) what the post-processor template adds, or the BOS token when there is none.
   parse_special: 1 finds special-token strings in the text (HF's default), 0 encodes them as
   plain text (tiktoken's disallowed_special=()). Writes at most cap ids and returns the
   count the whole text needs (call with cap 0 to size a buffer), or -1 when out of memory or
   add_bos is asked without a known BOS. Invalid UTF-8 still encodes, byte by byte (see
   codi_utf8_invalid_at). */
CODI_API int codi_encode(const codi_tokenizer *t, const char *text, size_t len, int add_bos, int parse_special,
                         int32_t *ids, int cap);
/* ids -> UTF-8 text, as Hugging Face's decode: bytes that do not form UTF-8 become U+FFFD.
   skip_special drops special tokens. Writes at most cap-1 bytes plus a NUL and returns the
   length the whole text needs, or -1 for an id out of range. */
CODI_API long codi_decode(const codi_tokenizer *t, const int32_t *ids, int n, int skip_special, char *out, size_t cap);
/* Streaming decode: feed one id at a time (id < 0 flushes at the end); out receives only
   whole UTF-8 characters, so a character split across tokens is printed once complete.
   Returns the bytes written (NUL added), or -1 for a bad id or cap < CODI_STREAM_BYTES(t). */
typedef struct { unsigned char part[4]; int n_part, need; unsigned char lo, hi; } codi_utf8_state;
#define CODI_STREAM_BYTES(t) (3 * (size_t)(t)->max_token_len + 16)
CODI_API int codi_decode_stream(const codi_tokenizer *t, codi_utf8_state *st, int32_t id, int skip_special, char *out, size_t cap);
/* A token for display (lens tables): its text with \n \t \r \\ escaped, and bytes that are
   not whole UTF-8 characters as \xNN. Same return and buffer contract as codi_decode. */
CODI_API long codi_token_text(const codi_tokenizer *t, int32_t id, char *out, size_t cap);
/* Byte offset of the first invalid UTF-8 sequence in text, or -1 if it is all valid. */
CODI_API long codi_utf8_invalid_at(const char *text, size_t len);

/* CODI's question normalisation, Python's q.strip().replace('  ', ' '): surrounding whitespace
   removed, then each run of two spaces read left to right replaced by one. Same buffer
   contract as codi_decode. */
CODI_API long codi_normalize_question(const char *q, char *out, size_t cap);
/* Gives the model's pad/bot/eot ids the names the CODI research tokenizer uses ("[PAD]",
   "<|bocot|>", "<|eocot|>") where the tokenizer has no token at those ids (and the model
   has them). 0, or -1 with a message. */
CODI_API int codi_tokenizer_add_codi_tokens(const codi_model *m, codi_tokenizer *t, char *err, size_t errsz);
/* The CODI prompt of a text question: normalised, encoded without BOS, then codi_prompt_ids
   (recipe 0: BOS q bot; 1: BOS q <|eot_id|> bot). Special-token text in the question (e.g.
   "<|bocot|>") is encoded as plain text. Returns the count or -1. */
CODI_API int codi_prompt_from_text(const codi_model *m, const codi_tokenizer *t, const char *question, int recipe,
                                   int32_t *out, int cap);
/* codi_prompt_from_text; parse_special 1: special-token text in the question becomes that token. */
CODI_API int codi_prompt_from_text_ex(const codi_model *m, const codi_tokenizer *t, const char *question, int recipe,
                                      int parse_special, int32_t *out, int cap);

/* ---- lenses (>>lens): distributions, the logit lens, the tuned lens and its training ---- */

/* log-softmax of logits [n] into logp [n] (may be logits itself); returns log(sum(exp(logits))). */
CODI_API double codi_log_softmax(const float *logits, int n, float *logp);
/* softmax of logits [n] into probs [n] (may be logits itself). */
CODI_API void codi_softmax(const float *logits, int n, float *probs);
/* Entropy of softmax(logits) in nats. */
CODI_API double codi_entropy(const float *logits, int n);
/* KL(softmax(p_logits) || softmax(q_logits)) in nats. */
CODI_API double codi_kl(const float *p_logits, const float *q_logits, int n);
/* The k most probable ids of softmax(logits [n]), most probable first (ties: lower id first),
   with their probabilities (probs may be NULL). Returns min(k, n). */
CODI_API int codi_top_k(const float *logits, int n, int k, int32_t *ids, float *probs);
/* 0-based rank of id under the same order as codi_top_k, and its probability (prob may be
   NULL); -1 for an id out of range. */
CODI_API int codi_rank_of(const float *logits, int n, int32_t id, float *prob);
/* The tokens that count as "the number value appears": Llama 3 writes digits in groups of
   up to three from the left, so the first token of value is its leading group ("360" for 360,
   "123" for 1234, "1" for 1000000); both the group alone and with a leading space count (a
   group that is not one token counts by the first token of its encoding). Writes up to 2 ids
   and returns how many; -1 when value is not an integer in [0, 1e15) (a negative number
   starts with the token "-", which says nothing). For values of more than three digits this
   is the first step the model takes toward writing it, shared with the shorter number it
   starts with. */
CODI_API int codi_number_tokens(const codi_tokenizer *t, double value, int32_t ids[2]);

/* ---- JSON (>>json): the reader behind config.json, tokenizer.json, specs and the CLI's files ----
   One arena per document, freed by codi_json_free; strings are decoded to NUL-terminated UTF-8.
   codi_json_parse keeps the first of duplicate keys (files from the wild); codi_json_parse_strict
   refuses them, naming the key (files people write). NULL with a message in err on bad input. */
enum { CODI_JSON_NULL, CODI_JSON_FALSE, CODI_JSON_TRUE, CODI_JSON_NUM, CODI_JSON_STR, CODI_JSON_ARR, CODI_JSON_OBJ };

typedef struct codi_json {
    int type;                      /* CODI_JSON_* */
    int count;                     /* number of children (arrays, objects) */
    double num;                    /* CODI_JSON_NUM */
    const char *str; size_t len;   /* CODI_JSON_STR: decoded bytes, NUL-terminated */
    const char *key; size_t keylen;/* member name when the parent is an object */
    struct codi_json *child;      /* first element or member */
    struct codi_json *next;       /* next sibling */
} codi_json;
CODI_API codi_json *codi_json_parse(const char *text, size_t len, char *err, size_t errsz);
CODI_API codi_json *codi_json_parse_strict(const char *text, size_t len, char *err, size_t errsz);
CODI_API void codi_json_free(codi_json *root);
CODI_API const codi_json *codi_json_get(const codi_json *o, const char *key);  /* member key of an object, or NULL */
CODI_API int codi_json_num(const codi_json *o, const char *key, double *out);  /* 1 if present and a number */
/* A regular file as a NUL-terminated buffer (CODI_FREE it), its length in *len; NULL if it is
   absent, not a regular file (a FIFO is refused before open) or memory runs out. */
CODI_API char *codi_read_text(const char *path, size_t *len);

/* ---- small pieces the model and the CLI share ---------------------------------------------- */
/* y = x / sqrt(mean(x^2) + eps) * weight, as HF LlamaRMSNorm (f32); y may be x. */
CODI_API void codi_rmsnorm(float *y, const float *x, const float *weight, int n, float eps);
CODI_API int codi_is_eos(const codi_config *c, int id);            /* 1 if id ends an answer */
CODI_API double codi_l2_norm(const float *x, long n);
/* Element i of a tensor of dtype (CODI_F32, CODI_BF16, CODI_F16) at p, as f32 (p may be unaligned). */
CODI_API float codi_elem_f32(const void *p, int dtype, size_t i);
/* SplitMix64 (Steele, Lea, Flood 2014): the next 64 random bits of the state *x (seeds derived
   from seeds, as codi_rng does). */
CODI_API uint64_t codi_splitmix64(uint64_t *x);

/* ---- names ------------------------------------------------------------------------------
   Constructors: _new makes an object in memory (codi_state_new, codi_batch_new, codi_steer_new,
   codi_tuned_lens_new), _load reads one from a file (codi_load for the model, codi_tokenizer_load,
   codi_steer_load, ...), _open opens a file kept open while used (codi_safetensors_open,
   codi_acts_open) and _close ends it; _init fills a struct you own (codi_means_init); _free
   releases any of them. Errors: a constructor returns NULL, with why in the caller's err buffer
   when it takes one (those that read files; codi_state_new and codi_batch_new fail only for memory
   or an argument out of range); afterwards calls return -1 and the object keeps the message
   (state->error, codi_batch_error(b)).
   Old names, kept for one release: */
#define codi_state_alloc codi_state_new
#define codi_batch_alloc codi_batch_new
#define codi_st_file codi_safetensors_file
#define codi_st_tensor codi_safetensors_tensor
#define codi_st_entry codi_safetensors_entry
#define codi_st_open codi_safetensors_open
#define codi_st_close codi_safetensors_close
#define codi_st_count codi_safetensors_count
#define codi_st_tensor_at codi_safetensors_tensor_at
#define codi_st_find codi_safetensors_find
#define codi_st_read_f32 codi_safetensors_read_f32
#define codi_st_metadata codi_safetensors_metadata

#ifndef CODI_NO_RESEARCH   /* the research half: tuned lenses, datasets, probes, statistics, PCA */

/* A tuned lens (Belrose et al. 2023; the tuned-lens library's residual form): one affine
   translator per residual index l = 0..L-1 (the last layer output needs none):
   lens_l(h) = lm_head(final_norm(h + W_l h + b_l)). All zeros = the logit lens. */
typedef struct {
    int n_layers, dim;  /* L, D of the model it was made for */
    float *weight;      /* [L, D, D] W_l (out, in) */
    float *bias;        /* [L, D] b_l */
} codi_tuned_lens;

CODI_API codi_tuned_lens *codi_tuned_lens_new(const codi_model *m);   /* zero translators; NULL out of memory */
CODI_API void codi_tuned_lens_free(codi_tuned_lens *t);
/* logits [V] of the lens at residual index layer (0..L) of resid [D]: the tuned lens when t
   is not NULL and layer < L, else the logit lens. 0, or -1 (out of memory, t made for another
   model's shape, or logits not finite: a lens that overflows) with a message in err. */
CODI_API int codi_tuned_lens_logits(const codi_model *m, const codi_tuned_lens *t, int layer, const float *resid,
                                    float *logits, char *err, size_t errsz);
/* Mean over n positions of KL(softmax(target_logits) || softmax(lens_layer(resid))) and, when
   grad_w [D, D] / grad_b [D] are not NULL, its gradient with respect to W_layer and b_layer.
   resid [n, D], target_logits [n, V]. Returns the loss, or NaN (out of memory / bad layer).
   One position at a time: the reference the trainer's batched engine is tested against. */
CODI_API double codi_tuned_lens_kl_grad(const codi_model *m, const codi_tuned_lens *t, int layer, int n,
                                        const float *resid, const float *target_logits, float *grad_w, float *grad_b);

/* Tuned-lens files. A directory as the tuned-lens library writes it (params.pt: torch.save of
   the translators' ModuleList state dict, keys "{i}.weight" [D, D] and "{i}.bias" [D];
   config.json: base_model_name_or_path, d_model, num_hidden_layers, bias,
   base_model_revision, unembed_hash, lens_type), a params.pt alone, or our .safetensors form
   (the same keys; metadata content = "codi_lens.tuned_lens.v1"). NULL + err on failure. */
CODI_API codi_tuned_lens *codi_tuned_lens_load(const codi_model *m, const char *path, char *err, size_t errsz);
/* Writes dir/params.pt (readable by torch.load, weights_only included) and dir/config.json
   (unembed_hash and base_model_revision null: the library then skips its check). dir must exist. */
CODI_API int codi_tuned_lens_save_dir(const codi_tuned_lens *t, const char *dir, const char *base_model, char *err, size_t errsz);
/* Writes our .safetensors form. */
CODI_API int codi_tuned_lens_save(const codi_tuned_lens *t, const char *path, const char *base_model, char *err, size_t errsz);

/* Training a tuned lens: each layer's translator minimises its mean KL(final || lens) over a
   set of samples (one position's residuals). Both recipes are preset:
   codi_lens_train_library: the tuned-lens library's train_loop (SGD, Nesterov momentum 0.9,
     lr 1.0 * (1 - 0.9), weight decay 1e-3 added to the gradient, the gradient of all
     translators clipped to norm 1 jointly, lr decayed linearly to 0 over total_steps, no warmup);
   codi_lens_train_sprint: the Latent Reasoning Sprint's (Adam lr 1e-3, betas 0.9/0.999, eps
     1e-8, no weight decay or schedule, batch 1, 3 epochs). The sprint initialises a full affine
     map A = I; h + W h + b with W = 0 is the same map with the same gradients (dA = dW), so
     both recipes train the residual form and save files the library reads.
   Where this differs from the library: math in f32 (it autocasts to bf16); a step is `batch`
   samples of CODI positions (it takes 2^18 text tokens per step), in a seeded shuffle per epoch. */
enum { CODI_LENS_SGD = 0, CODI_LENS_ADAM = 1 };
typedef struct {
    int optimizer;        /* CODI_LENS_SGD (Nesterov) or CODI_LENS_ADAM (PyTorch's update rule) */
    double lr;
    double momentum;      /* SGD momentum, or Adam beta1 */
    double beta2, eps;    /* Adam */
    double weight_decay;  /* added to the gradient (PyTorch's coupled form) */
    double clip_norm;     /* > 0: clip the gradient of all translators to this L2 norm */
    int linear_decay;     /* 1: lr * (total_steps - step) / total_steps */
    long total_steps;     /* steps of the whole run (the schedule's length and when training stops) */
    int batch;            /* samples per step */
    uint64_t seed;        /* sample order: a seeded shuffle per epoch */
    int n_threads;        /* workers (CODI_THREADS builds) */
    const char *data_id;  /* the training data's identity, saved in checkpoints as "data" (NULL: none) */
} codi_lens_train_opts;
CODI_API codi_lens_train_opts codi_lens_train_library(long total_steps, int batch);
CODI_API codi_lens_train_opts codi_lens_train_sprint(long n_samples);   /* 3 epochs of batch 1 */

/* A sample: fill resid [L+1, D] (the residual entering each layer; index L = last layer
   output) for sample index and return 0 (the target is then lm_head(final_norm(resid[L]))),
   or also fill target_logits [V] and return 1; any other value stops training with an error. */
typedef int (*codi_lens_sample_fn)(void *user, long index, float *resid, float *target_logits);

typedef struct codi_lens_trainer codi_lens_trainer;
/* A trainer of t (which it updates in place) over samples 0..n_samples-1. NULL + err on failure. */
CODI_API codi_lens_trainer *codi_lens_trainer_new(const codi_model *m, codi_tuned_lens *t, const codi_lens_train_opts *o,
                                                  long n_samples, codi_lens_sample_fn fn, void *user, char *err, size_t errsz);
CODI_API void codi_lens_trainer_free(codi_lens_trainer *tr);
/* One optimiser step over the next batch; loss [L] receives each layer's mean KL on that
   batch before the update (may be NULL). 0, or -1 with codi_lens_trainer_error. */
CODI_API int codi_lens_trainer_step(codi_lens_trainer *tr, double *loss);
CODI_API long codi_lens_trainer_steps_done(const codi_lens_trainer *tr);
CODI_API const char *codi_lens_trainer_error(const codi_lens_trainer *tr);
/* Checkpoints: the translators, the optimiser's moments and the step, with every option in the
   metadata; resuming checks the options (threads aside) and continues exactly where the saved run
   was (the sample order follows from seed and step). 0, or -1 with a message in err (the trainer
   is then unusable: make a new one). */
CODI_API int codi_lens_trainer_save(const codi_lens_trainer *tr, const char *path, char *err, size_t errsz);
CODI_API int codi_lens_trainer_resume(codi_lens_trainer *tr, const char *path, char *err, size_t errsz);
/* Mean KL(final || lens) per residual index [L] of t (NULL: the logit lens) over samples
   first..first+count-1 of fn, with n_threads workers. 0, or -1 with a message in err. */
CODI_API int codi_tuned_lens_eval(const codi_model *m, const codi_tuned_lens *t, codi_lens_sample_fn fn, void *user,
                                  long first, long count, int n_threads, double *kl, char *err, size_t errsz);
/* The same per sample: kl [count, L] = KL(final || lens) of each sample at each residual index
   (per-question rows and intervals). 0, or -1 with a message in err. */
CODI_API int codi_tuned_lens_eval_each(const codi_model *m, const codi_tuned_lens *t, codi_lens_sample_fn fn, void *user,
                                       long first, long count, int n_threads, double *kl, char *err, size_t errsz);

/* ---- activation datasets (>>acts): one pre-sized .safetensors file, rows filled in place ----
   Layout (Q questions, P recorded positions, L layers, D dim, N latents, KVH, HD):
     resid [Q, P, L+1, D]  final [Q, P, D]  latent_inputs [Q, N, D]      F32 or BF16
     key, value [Q, P, L, KVH, HD] (key post-RoPE, as cached; only when kv)   F32 or BF16
     key_pre_rope [Q, P, L, KVH, HD] (only when kv): the same keys before RoPE (codi_key_pre_rope:
     rotated back by the row's position; W_k attn_norm(resid)); codi_acts_write derives it from key
     positions [Q, P] I32 (-1 = padding)  prompt_len [Q] I32  prompt_ids [Q, Tmax] I32 (-1 pad)
     answer_ids [Q, A] I32 (-1 pad)  gold, prediction [Q] F64 (NaN absent)  correct, done [Q] U8
     question_index [Q] I32
   and string metadata: format "codi_lens.acts.v1", model, questions, positions, labels (JSON
   list), n_latent, recipe, dtype, layers, dim, kv, version, command (and questions_hash when the
   spec gives one). A row's done byte is
   written and flushed after the row, so a killed run resumes by skipping done rows; rows not
   done read as zeros. */
#define CODI_LENS_VERSION "0.3"
typedef struct {
    int n_questions;          /* Q */
    int n_positions;          /* P */
    int n_latent;             /* N */
    int max_prompt;           /* Tmax */
    int max_answer;           /* A */
    int bf16;                 /* 1: float tensors in bfloat16 */
    int kv;                   /* 1: record key and value */
    const char *model, *questions, *positions, *labels_json, *recipe, *command;  /* metadata strings */
    const char *questions_hash;   /* optional metadata: a digest of the questions file's bytes (codi record:
                                     FNV-1a 64, 16 hex digits), so readers can tell the file apart; NULL: none */
    const char *work;         /* NULL, or metadata "work": what else defines the rows (shard, the questions'
                                 content hash, options); a resume compares it like the others */
} codi_acts_spec;

/* One question's row; pointers the spec does not ask for may be NULL. */
typedef struct {
    const float *resid;          /* [P, L+1, D] */
    const float *final;          /* [P, D] */
    const float *latent_inputs;  /* [N, D] */
    const float *key, *value;    /* [P, L, KVH, HD] */
    const int32_t *positions;    /* [P] */
    const int32_t *prompt_ids; int n_prompt;
    const int32_t *answer_ids; int n_answer;
    double gold, prediction;     /* NaN when absent */
    int correct, question_index;
} codi_acts_row;

typedef struct codi_acts codi_acts;
/* Creates path pre-sized for the spec, or with resume = 1 and an existing file, reopens it
   after checking that its shapes and metadata (all but command) equal the spec's. */
CODI_API codi_acts *codi_acts_open(const codi_model *m, const char *path, const codi_acts_spec *spec, int resume,
                                   char *err, size_t errsz);
CODI_API int codi_acts_done(const codi_acts *a, int q);        /* 1 if row q was completed */
CODI_API int codi_acts_count_done(const codi_acts *a);
/* Writes row q, then its done byte; 0 or -1 with err. With kv, key_pre_rope is derived from the
   row's key and positions (each slot's keys rotated back by its position; zeros where -1). */
CODI_API int codi_acts_write(codi_acts *a, int q, const codi_acts_row *row, char *err, size_t errsz);
CODI_API int codi_acts_close(codi_acts *a, char *err, size_t errsz);    /* 0, or -1 if a write failed */
/* Gathers a row's activations from a state: resid [P, L+1, D], final [P, D] (final-norm of
   the last layer output) and, when not NULL, key / value [P, L, KVH, HD] at positions [P]
   (slots with position -1, or beyond s->n_pos, are zeros). */
CODI_API void codi_acts_gather(const codi_model *m, codi_state *s, const int32_t *positions, int P,
                               float *resid, float *final, float *key, float *value);
/* Checks a dataset opened with codi_safetensors_open before any reader sizes or indexes with it: each
   tensor of the layout above that is present has its dtype class (F64; F32/BF16/F16; I32 or
   U8) and rank, and its dimensions agree with the other tensors' (Q, P, L+1 = L + 1, D, N, KVH,
   HD, Tmax, A) and with the "layers" / "dim" metadata; every dimension and Q * P * (L+1) fit an
   int; with m, L, D, KVH and HD are the model's. (codi_safetensors_open has checked each tensor's bytes
   against its shape and the file's size.) 0, or -1 with a message naming the tensor. */
CODI_API int codi_acts_check(const codi_safetensors_file *f, const codi_model *m, char *err, size_t errsz);

/* ---- probes (>>probe) and PCA (>>pca) over recorded activations ------------------------ */

/* A linear probe: logistic regression on standardised inputs x' = (x - mean) / scale.
   K = 2: one weight row, P(class 1) = sigmoid(w.x' + b). K > 2: K rows, P = softmax(W x' + b)
   (scikit-learn's multinomial form). Labels are 0..K-1, K <= 256. */
typedef struct {
    int dim;            /* D */
    int n_classes;      /* K >= 2 */
    int n_rows;         /* weight rows: 1 when K = 2, else K */
    float *mean;        /* [D] */
    float *scale;       /* [D] population standard deviation (1 where a feature is constant) */
    float *weight;      /* [n_rows, D] on standardised inputs */
    float *bias;        /* [n_rows] */
    double l2;          /* lambda it was trained with */
    int iterations;     /* L-BFGS iterations run */
    int converged;      /* 1: max |gradient| <= tol was reached */
    double loss;        /* final objective */
} codi_probe;

/* Training options (start from codi_probe_opts_default()). The objective is
   mean cross-entropy + l2/2 * |W|^2 (bias unpenalised): scikit-learn's C = 1 / (l2 * n). */
typedef struct {
    double l2;          /* default 1e-2 */
    int max_iter;       /* default 1000 */
    double tol;         /* stop when max |gradient| <= tol; default 1e-6 */
    int standardize;    /* 1 (default): mean / scale from the training rows; 0: mean 0, scale 1 */
    int n_threads;      /* workers over the rows (CODI_THREADS builds; same bits for any count); default 1 */
} codi_probe_opts;

/* Held-out quality of a probe. Intervals are 95%: Wilson for accuracy; Hanley-McNeil
   (normal approximation to the Mann-Whitney AUC) for AUC. K > 2: AUC is the one-vs-rest
   macro average over classes present with both signs, its interval from the mean of the
   per-class standard errors combined as independent. */
typedef struct {
    int n;              /* rows scored */
    double accuracy, acc_lo, acc_hi;
    double auc, auc_lo, auc_hi;   /* NaN when the rows hold a single class */
    double log_loss;    /* mean cross-entropy */
} codi_probe_metrics;

CODI_API codi_probe_opts codi_probe_opts_default(void);
/* Fits a probe on x [n, D] with labels y [n] in 0..n_classes-1 (n_classes >= 2, every
   class present) by full-batch L-BFGS in double. NULL with a message on bad input. */
CODI_API codi_probe *codi_probe_train(const float *x, const int32_t *y, int n, int dim, int n_classes,
                                      const codi_probe_opts *o, char *err, size_t errsz);
CODI_API void codi_probe_free(codi_probe *p);
/* Class probabilities proba [n, K] of rows x [n, D] (scikit-learn's predict_proba). */
CODI_API void codi_probe_predict_proba(const codi_probe *p, const float *x, int n, float *proba);
/* Accuracy, AUC and log-loss of probabilities proba [n, k] against labels y [n]. 0, or -1. */
CODI_API int codi_probe_metrics_of(const float *proba, const int32_t *y, int n, int k, codi_probe_metrics *out,
                                   char *err, size_t errsz);
/* ROC AUC of scores [n] for labels positive [n] (nonzero = positive), ties counted half;
   *se (may be NULL) gets the Hanley-McNeil standard error. NaN without both classes. */
CODI_API double codi_roc_auc(const float *score, const int32_t *positive, int n, double *se);
/* ---- statistics (>>stats): an interval on every number, paired tests, corrections ------
   Every rate a command prints comes with its Wilson interval and n; every comparison of two
   conditions on the same questions is paired (McNemar's exact test and the flip counts); a
   family of comparisons is corrected (Holm for the family-wise error, Benjamini-Hochberg for the
   false discovery rate). Reference values: scipy.stats and statsmodels (tests/test_stats.c). */

/* Wilson score interval for k successes in n trials at normal quantile z (1.96: 95%);
   [0, 1] when n = 0. scipy: statsmodels.stats.proportion.proportion_confint(method="wilson"). */
CODI_API void codi_wilson_interval(int k, int n, double z, double *lo, double *hi);
/* McNemar's exact test of paired binary outcomes: b pairs right only under the first
   condition, c right only under the second; two-sided p = min(1, 2 P(X <= min(b, c))),
   X ~ Binomial(b + c, 1/2); 1 when b + c = 0. Equals statsmodels' mcnemar(exact=True) and
   scipy.stats.binomtest(b, b + c).pvalue. */
CODI_API double codi_mcnemar_exact(long b, long c);
/* 95% interval of a paired difference of proportions, (c - b) / n over n pairs with b and c
   discordant as above: Bonett and Price's adjusted Wald interval (each discordant count + 1,
   n + 2), clipped to [-1, 1]. */
CODI_API void codi_paired_diff_interval(long b, long c, long n, double *lo, double *hi);
/* Adjusted p values of a family of n tests (out may be p itself). NaN entries (tests not
   made) stay NaN and do not count in the family. Holm's step-down (family-wise error) and
   Benjamini-Hochberg's step-up q values (false discovery rate), both as statsmodels'
   multipletests(method="holm" | "fdr_bh"). 0, or -1 when out of memory. */
CODI_API int codi_holm(const double *p, int n, double *out);
CODI_API int codi_bh(const double *p, int n, double *out);
/* Standard normal quantile (inverse CDF) and Student's t quantile with df degrees of freedom,
   p in (0, 1) (0 and 1 give -inf / inf for the normal, NaN for t), found on the nearer tail so
   p near 0 or 1 keeps its precision: relative error about 1e-15, 1e-12 for t at df 1e4, 1e-9 at
   df 1e6 (tests/test_stats.c against mpmath). */
CODI_API double codi_normal_quantile(double p);
CODI_API double codi_t_quantile(double p, double df);
/* The mean of x [n] with its standard error (sample standard deviation / sqrt(n)) and a 95%
   interval: Student's t (codi_mean_interval) or the percentile bootstrap over n_boot resamples
   with a seed, for skewed data (codi_bootstrap_mean; n_boot 2000 is a good default). n < 2:
   se and the bounds are NaN. Non-finite entries of x are an error: -1 (and NaN fields). */
typedef struct { long n; double mean, se, lo, hi; } codi_mean_ci;
CODI_API int codi_mean_interval(const double *x, long n, codi_mean_ci *out);
CODI_API int codi_bootstrap_mean(const double *x, long n, int n_boot, uint64_t seed, codi_mean_ci *out);
/* Probes in one .safetensors file: for each probe NAME, NAME.mean [D], NAME.scale [D],
   NAME.weight [R, D], NAME.bias [R] (F32; R = 1 means two classes); metadata is NULL or
   {key, value, ..., NULL} added to codi_lens = "probe.v1". 0, or -1 with a message. */
CODI_API int codi_probe_save(const char *path, const codi_probe *const *probes, const char *const *names, int n,
                             const char *const *metadata, char *err, size_t errsz);
/* The probe NAME of a file codi_probe_save wrote; NULL with a message (absent, shapes that
   do not fit together, non-finite values). */
CODI_API codi_probe *codi_probe_load(const char *path, const char *name, char *err, size_t errsz);

/* PCA by covariance: rows are streamed into an accumulator (double sums over fixed blocks
   of rows, so the result does not depend on how the rows were split between calls), then a
   symmetric eigensolver (Householder tridiagonalisation + implicit QL, O(D^3)). */
typedef struct codi_pca_acc codi_pca_acc;
typedef struct {
    int dim;            /* D */
    int n_components;   /* k kept */
    long n_rows;        /* rows the covariance came from */
    float *mean;        /* [D] */
    float *components;  /* [k, D] unit eigenvectors by decreasing variance; sign: the entry of
                           largest |value| is positive (the first such on ties) */
    double *variance;   /* [k] variance along each component (divisor n - 1) */
    double *explained;  /* [k] variance / total variance */
    double total_variance; /* trace of the covariance */
} codi_pca;

/* n_threads: workers for the covariance update and the eigensolver (CODI_THREADS builds; the
   result is the same bits for any count). */
CODI_API codi_pca_acc *codi_pca_acc_new(int dim, int n_threads, char *err, size_t errsz);
/* Adds rows x [n, D]; -1 with a message for a non-finite value (nothing added). */
CODI_API int codi_pca_acc_add(codi_pca_acc *a, const float *x, int n, char *err, size_t errsz);
CODI_API long codi_pca_acc_rows(const codi_pca_acc *a);
CODI_API void codi_pca_acc_free(codi_pca_acc *a);
/* The top n_components (1..D) of the rows added so far (at least 2). NULL with a message. */
CODI_API codi_pca *codi_pca_fit(const codi_pca_acc *a, int n_components, char *err, size_t errsz);
CODI_API void codi_pca_free(codi_pca *p);
/* Projections out [n, k] = (x [n, D] - mean) . components^T. */
CODI_API void codi_pca_project(const codi_pca *p, const float *x, int n, float *out);
/* PCAs in one .safetensors file: for each NAME, NAME.mean [D] F32, NAME.components [k, D] F32,
   NAME.variance [k] F64, NAME.explained [k] F64, NAME.stats [2] F64 (total variance, rows);
   codi_lens = "pca.v1" plus metadata {key, value, ..., NULL} or NULL. 0, or -1. */
CODI_API int codi_pca_save(const char *path, const codi_pca *const *pcas, const char *const *names, int n,
                           const char *const *metadata, char *err, size_t errsz);
/* The PCA NAME of a file codi_pca_save wrote; NULL with a message. */
CODI_API codi_pca *codi_pca_load(const char *path, const char *name, char *err, size_t errsz);
/* Eigen-decomposition of a symmetric a [n, n] (read; only the lower triangle is used):
   values [n] in decreasing order, vectors [n, n] row i = unit eigenvector i (sign as in
   codi_pca), with n_threads workers (same bits for any count). 0, or -1 with a message (no
   convergence, non-finite input, out of memory). */
CODI_API int codi_sym_eigen(const double *a, int n, int n_threads, double *values, double *vectors, char *err, size_t errsz);
/* The lens along a direction: delta [V] = lens(base + s * dir) - lens(base), base, dir [D].
   normed = 0: base lives in the residual stream and lens = lm_head(final_norm(.)); normed = 1:
   base is a final-norm hidden state and lens = lm_head(.) (linear: delta = s * lm_head(dir)).
   final_norm of a bare direction ignores its scale, so a component is read as base = the PCA
   mean moved by s = t standard deviations: what that move does to the lens logits. 0, or -1. */
CODI_API int codi_lens_direction(const codi_model *m, const float *base, const float *dir, float s, int normed,
                                 float *delta);

#endif /* CODI_NO_RESEARCH */

#ifdef __cplusplus
}
#endif
#endif /* CODI_LENS_H */

/* ---- stop here if you only want the API ------------------------------------------------ */

#ifdef CODI_LENS_IMPLEMENTATION
#ifndef CODI_LENS_IMPLEMENTATION_DONE
#define CODI_LENS_IMPLEMENTATION_DONE

#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <limits.h>
#if !defined(_WIN32)
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#endif
#if !defined(CODI_NO_MMAP) && !defined(_WIN32)
#include <sys/mman.h>
#endif
#ifdef CODI_THREADS
#include <pthread.h>
#endif

#if defined(CODI_MALLOC) && defined(CODI_FREE) && defined(CODI_REALLOC)
#elif !defined(CODI_MALLOC) && !defined(CODI_FREE) && !defined(CODI_REALLOC)
#define CODI_MALLOC(n) malloc(n)
#define CODI_REALLOC(p, n) realloc(p, n)
#define CODI_FREE(p) free(p)
#else
#error "define all of CODI_MALLOC, CODI_REALLOC, CODI_FREE or none"
#endif
#ifndef CODI_ASSERT
#include <assert.h>
#define CODI_ASSERT(x) assert(x)
#endif
#if defined(CODI_SCALAR) && !defined(CODI_NO_SIMD)
#define CODI_NO_SIMD   /* the switch's old name */
#endif

/* >>util --------------------------------------------------------------------------------- */

static float codi__bf16_to_f32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16; float f;
    memcpy(&f, &u, 4); return f;
}

/* Round to nearest even, as torch's .to(torch.bfloat16) does; NaN stays NaN. */
static uint16_t codi__f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float codi__f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31u, man = h & 1023u, u;
    float f;
    if (exp == 0) {                               /* zero or subnormal */
        f = ldexpf((float)man, -24);
        return sign ? -f : f;
    }
    if (exp == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((exp + 112u) << 23) | (man << 13);
    memcpy(&f, &u, 4); return f;
}

static size_t codi__dtype_size(int dtype) {
    static const size_t size[] = { 4, 2, 2, 4, 1, 8, 8 };   /* F32 BF16 F16 I32 U8 F64 I64 */
    return size[dtype];
}

/* Checked arithmetic for sizes read from files: 1 with *out set, or 0 when the result
   does not fit. Every size, count and offset that comes from input goes through these. */
static int codi__mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (b && a > UINT64_MAX / b) return 0;
    *out = a * b; return 1;
}
#ifndef CODI_NO_TORCH   /* the pickle reader's */
static int codi__add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a > UINT64_MAX - b) return 0;
    *out = a + b; return 1;
}
/* Elements of a shape whose dims are >= 0, as long as the count stays below 2^62 (so a
   count times an element size of 1..8 bytes still fits in int64); else 0. */
static int codi__numel_checked(int ndim, const int64_t *shape, int64_t *out) {
    uint64_t n = 1; int i;
    for (i = 0; i < ndim; i++)
        if (shape[i] < 0 || !codi__mul_u64(n, (uint64_t)shape[i], &n) || n > ((uint64_t)1 << 62)) return 0;
    *out = (int64_t)n; return 1;
}
#endif
/* x as an int in [lo, hi] when x is a whole number there (NaN and infinities are not);
   the range is checked before the cast. */
static int codi__double_to_int(double x, int lo, int hi, int *out) {
    if (!(x >= (double)lo && x <= (double)hi) || x != floor(x)) return 0;
    *out = (int)x; return 1;
}

/* Element i of a tensor of dtype at p, as f32 (reads byte-wise: p may be unaligned). */
CODI_API float codi_elem_f32(const void *p, int dtype, size_t i) {
    const unsigned char *b = (const unsigned char *)p;
    if (dtype == CODI_F32) { float f; memcpy(&f, b + 4 * i, 4); return f; }
    else {
        uint16_t h; memcpy(&h, b + 2 * i, 2);
        return dtype == CODI_BF16 ? codi__bf16_to_f32(h) : codi__f16_to_f32(h);
    }
}

static void codi__err(char *err, size_t errsz, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
#include <stdarg.h>
static void codi__err(char *err, size_t errsz, const char *fmt, ...) {
    va_list ap;
    if (!err || !errsz) return;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* SplitMix64 (Steele, Lea, Flood 2014): the next 64 random bits of the state *x. */
CODI_API uint64_t codi_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static char *codi__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = (char *)CODI_MALLOC(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int codi__ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* >>interfaces: what Parts I-III use from the appendices (defined there) ---------------------- */

/* The kernel table: Part I multiplies only through it (codi__matmul_range picks a product
   for the shape); the scalar path is at the end of >>kernels, the others in Appendix B. */
#if defined(__GNUC__) || defined(__clang__)
#define CODI__PREFETCH(p) __builtin_prefetch(p)
#else
#define CODI__PREFETCH(p) ((void)(p))
#endif
#define CODI__KC 256      /* GEMM depth slice: one packed weight panel of KC x NR stays in L1 */
#define CODI__NB_FLOATS 131072   /* GEMM row block: its n x NB outputs (512 KB) stay in L2 while every KC slice adds to them */
#define CODI__NB_MAX 256  /* ... and its KC-deep slice of packed weight panels (256 KB) too */
#define CODI__MC 256      /* positions per forward pass (and per LoRA-merge block) */
#define CODI__GEMV_ROW_MAX 4096 /* GEMV rows up to this long go one at a time (x, 16 KB, stays in L1 beside the stream) */
#define CODI__GEMM_MIN 64 /* fewer positions: the multi-position GEMV (measured faster below ~64: packs nothing) */

/* gemv: out[r - r0] for r0 <= r < r1; xh [2 cols] is x as bf16 hi and lo parts when the path
   multiplies bf16 (else unused). micro: c[i, j] (+)= sum_k a[k, i] * b[k, j] over one MR x NR tile. */
typedef void (*codi__gemv_fn)(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1);
typedef void (*codi__micro_fn)(int kb, const void *a, const void *b, float *c, size_t ldc, int add);
typedef void (*codi__gemvn_fn)(float *out, size_t ldo, const float *x, int n, const codi_matrix *w, int r0, int r1, float *work);
typedef void (*codi__tiles_fn)(float *out, size_t ldo, const float *x, const codi_matrix *w, int n, int r0, int r1, float *work);
typedef void (*codi__attend_fn)(float *out, const float *q, int nq, const float *keys, const float *vals, int T, int HD, float *sc);
typedef struct {
    const char *name;
    codi__gemv_fn gemv;
    codi__gemvn_fn gemvn;     /* 2..GEMM_MIN-1 positions at once (f32 activations, also on a bf16_pairs path: its GEMV
                                 per position would read the weights once per position); NULL: gemv per position */
    codi__micro_fn micro;     /* NULL: prefill uses gemv per position (the scalar reference) */
    int mr, nr;               /* micro-kernel tile: positions x weight rows */
    int bf16_pairs;           /* micro and gemv take bf16 activations: 1 hi and lo parts (split once per block), 2 hi alone */
    codi__gemv_fn gemv_f32w;  /* with bf16_pairs: what f32 weights use instead */
    codi__micro_fn micro_f32w;
    void (*pack_b)(float *b, const codi_matrix *w, int r0, int nrows, int k0, int kb, int nr);  /* f32 panels */
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);                                  /* y += a x */
    codi__tiles_fn tiles;     /* NULL, or every product of 2+ positions with bf16 weights (AMX) */
    codi__attend_fn attend;   /* decode attention of the query heads of one kv head (codi__attend_dot_axpy's contract) */
} codi__kernel;

/* The thread pool (>>threads): CODI__PARALLEL, below, runs a task over it. */
typedef struct codi__pool codi__pool;
typedef void (*codi__task_fn)(void *ctx, int tid, int start, int end);

/* Mapped files and the table of named tensors the loaders fill (>>files, >>tensors, >>loading). */
typedef struct codi__file {
    const unsigned char *data; size_t size;
    int mapped, fd;                 /* fd stays open while mapped (see codi__release_tensor) */
    struct codi__file *next;
} codi__file;

typedef struct {
    char *name;            /* canonical name (see codi__canonical_name) */
    int dtype;             /* CODI_F32 / CODI_BF16 / CODI_F16, or -1 for a type we cannot use */
    char dtype_name[16];
    int ndim;
    int64_t shape[4];
    const void *data;      /* contiguous row-major, inside a mapped file */
    int source;            /* 0 checkpoint, 1 base */
} codi__tensor;

typedef struct {
    codi__tensor *t; int n, cap;
    codi__file *files;     /* every file the tensors point into */
} codi__tensors;

typedef struct { uint32_t table[8][256]; } codi__crc32_tables;

/* The appendices' functions that Parts I-III call, by section. */
#ifdef CODI_THREADS
static codi__pool *codi__pool_new(int n);
static void codi__pool_run(codi__pool *p, codi__task_fn fn, void *ctx, int total);
static void codi__pool_free(codi__pool *p);
#define CODI__PARALLEL(pool, fn, ctx, total) \
    do { if (pool) codi__pool_run(pool, fn, ctx, total); else fn(ctx, 0, 0, total); } while (0)
#else
#define CODI__PARALLEL(pool, fn, ctx, total) fn(ctx, 0, 0, total)
#endif
#ifndef CODI_NO_TORCH
static void codi__crc32_init(codi__crc32_tables *t);
static uint32_t codi__crc32(const codi__crc32_tables *t, const unsigned char *p, uint64_t n);
#endif
/* from >>files */
static int codi__is_regular(const char *path);
static codi__file *codi__file_open(const char *path, char *err, size_t errsz);
static void codi__file_close(codi__file *f);
/* from >>tensors */
static codi__tensor *codi__tensors_find(const codi__tensors *ts, const char *name);
static void codi__tensors_free(codi__tensors *ts);
static int64_t codi__numel(int ndim, const int64_t *shape);
/* from >>safetensors */
static int codi__read_safetensors(codi__tensors *ts, const char *path, int source, char *err,
                                  size_t errsz);
/* from >>pickle */
static int codi__read_torch_zip(codi__tensors *ts, const char *path, int source, int verify_crc,
                                char *err, size_t errsz);
/* from >>simd */
static int codi__compute_bf16_runs(void);
static const codi__kernel *codi__kernel_active(void);
static const codi__kernel *codi__kernel_for(int compute);
static size_t codi__work_floats(int n, int k);
static void codi__matmul_range(const codi__kernel *kn, float *out, size_t ldo, const float *x,
                               const codi_matrix *w, int n, int r0, int r1, float *work);

/* ======== PART I. THE MODEL: the kernels, the state, the reference forward, the forward, the CODI loop  */

/* >>kernels: small named functions, outputs first ----------------------------------------- */

/* Dot product of two f32 vectors with 8 independent partial sums (vectorizes at -O2). */
static float codi__dot(const float *a, const float *b, int n) {
    float acc[8] = { 0, 0, 0, 0, 0, 0, 0, 0 }, s;
    int i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) acc[k] += a[i + k] * b[i + k];
    s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Row r of W [cols] as f32 into out (an embedding row). */
static void codi__row_f32(float *out, const codi_matrix *w, int r) {
    int j;
    for (j = 0; j < w->cols; j++) out[j] = codi_elem_f32(w->data, w->dtype, (size_t)r * w->cols + j);
}

#ifndef CODI_NO_RESEARCH   /* the lenses' */
/* Row r of W as f32: a pointer into W (f32) or into buf after converting (bf16). */
static const float *codi__matrix_row(const codi_matrix *w, int r, float *buf) {
    if (w->dtype == CODI_F32) return (const float *)w->data + (size_t)r * w->cols;
    codi__row_f32(buf, w, r);
    return buf;
}
#endif

/* y = x / sqrt(mean(x^2) + eps) * weight, as HF LlamaRMSNorm (f32). */
CODI_API void codi_rmsnorm(float *y, const float *x, const float *weight, int n, float eps) {
    double ss = 0;
    float scale;
    int i;
    for (i = 0; i < n; i++) ss += (double)x[i] * x[i];
    scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (i = 0; i < n; i++) y[i] = weight[i] * (x[i] * scale);
}

/* y = (x - mean) / sqrt(var + eps) * w + b, as torch LayerNorm (biased variance). */
static void codi__layernorm(float *y, const float *x, const float *w, const float *b, int n, float eps) {
    double mean = 0, var = 0;
    float inv;
    int i;
    for (i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    inv = 1.0f / sqrtf((float)(var / n) + eps);
    for (i = 0; i < n; i++) y[i] = (float)(x[i] - mean) * inv * w[i] + b[i];
}

static float codi__gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
static float codi__silu(float x) { return x / (1.0f + expf(-x)); }

/* HF's rotary inverse frequency of pair i (0..HD/2-1), llama3-scaled when configured (f32). */
static float codi__rope_freq(const codi_config *c, int i) {
    float f = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
    if (c->rope_llama3) {
        float low_wl = (float)c->rope_original_max_pos / c->rope_low_freq_factor;
        float high_wl = (float)c->rope_original_max_pos / c->rope_high_freq_factor;
        float wl = 2.0f * 3.14159265358979323846f / f;
        if (wl > low_wl) f = f / c->rope_factor;
        else if (wl >= high_wl) {
            float smooth = ((float)c->rope_original_max_pos / wl - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
            f = (1.0f - smooth) * f / c->rope_factor + smooth * f;
        }
    }
    return f;
}

static void codi__rope_inv_freq(const codi_config *c, float *inv_freq) {
    int i;
    for (i = 0; i < c->head_dim / 2; i++) inv_freq[i] = codi__rope_freq(c, i);
}

/* Rotates pairs (j, j + HD/2) of each of n_heads vectors by the angles of one position. */
static void codi__rope(float *v, int n_heads, int head_dim, const float *cosv, const float *sinv) {
    int h, j, half = head_dim / 2;
    for (h = 0; h < n_heads; h++) {
        float *x = v + (size_t)h * head_dim;
        for (j = 0; j < half; j++) {
            float a = x[j], b = x[j + half];
            x[j] = a * cosv[j] - b * sinv[j];
            x[j + half] = b * cosv[j] + a * sinv[j];
        }
    }
}

/* The scalar reference: per row, a dot product widening bf16 as it goes. */
static float codi__dot_bf16(const float *x, const uint16_t *w, int n) {
    float acc[8] = { 0, 0, 0, 0, 0, 0, 0, 0 }, s;
    int i = 0, k;
    for (; i + 8 <= n; i += 8)
        for (k = 0; k < 8; k++) acc[k] += x[i + k] * codi__bf16_to_f32(w[i + k]);
    s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) s += x[i] * codi__bf16_to_f32(w[i]);
    return s;
}

static void codi__axpy(float *y, float a, const float *x, int n) {
    int i;
    for (i = 0; i < n; i++) y[i] += a * x[i];
}

/* Each of the nq rows of sc [nq, T] (scaled scores) -> its softmax weights. */
static void codi__softmax_weights(float *sc, int nq, int T) {
    int h, t;
    for (h = 0; h < nq; h++) {
        float *a = sc + (size_t)h * T, mx = -FLT_MAX, sum = 0;
        for (t = 0; t < T; t++) if (a[t] > mx) mx = a[t];
        for (t = 0; t < T; t++) { a[t] = expf(a[t] - mx); sum += a[t]; }
        for (t = 0; t < T; t++) a[t] /= sum;
    }
}

/* Decode attention of nq query heads q [nq, HD] sharing one kv head, against cached positions
   0..T-1 (keys, vals [T, HD]): out [nq, HD] = softmax(q K^T / sqrt(HD)) V; sc [nq, T] holds the
   scores, then the weights. Here one dot and one axpy call per position and head; the SIMD paths
   compute the same sums in blocks (codi__attend_avx512). */
static void codi__attend_dot_axpy(float (*dot)(const float *, const float *, int), void (*axpy)(float *, float, const float *, int),
                                  float *out, const float *q, int nq, const float *keys, const float *vals, int T, int HD, float *sc) {
    float scale = 1.0f / sqrtf((float)HD);
    int h, t, j;
    for (h = 0; h < nq; h++)
        for (t = 0; t < T; t++) sc[(size_t)h * T + t] = dot(q + (size_t)h * HD, keys + (size_t)t * HD, HD) * scale;
    codi__softmax_weights(sc, nq, T);
    for (h = 0; h < nq; h++) {
        float *o = out + (size_t)h * HD;
        for (j = 0; j < HD; j++) o[j] = 0;
        for (t = 0; t < T; t++) axpy(o, sc[(size_t)h * T + t], vals + (size_t)t * HD, HD);
    }
}
static void codi__attend_scalar(float *out, const float *q, int nq, const float *keys, const float *vals, int T, int HD, float *sc) {
    codi__attend_dot_axpy(codi__dot, codi__axpy, out, q, nq, keys, vals, T, HD, sc);
}

static void codi__gemv_scalar(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    int r;
    (void)xh;
    for (r = r0; r < r1; r++)
        out[r - r0] = w->dtype == CODI_BF16 ? codi__dot_bf16(x, (const uint16_t *)w->data + (size_t)r * w->cols, w->cols)
                                            : codi__dot(x, (const float *)w->data + (size_t)r * w->cols, w->cols);
}

/* >>state: every buffer of a run, in one place ---------------------------------------- */

#define CODI__CHUNK 512   /* positions per forward pass: one pass over the weights each */

/* Blocked attention (prefill): query rows per block, so that a block's queries (rows x heads per
   kv head) fill a GEMM; and the per-thread floats it needs for a state of T positions. */
static int codi__att_rows(const codi_config *c) { int g = c->n_heads / c->n_kv_heads; return (CODI__GEMM_MIN + g - 1) / g; }
static size_t codi__att_floats(const codi_config *c, size_t T) {
    size_t qb = (size_t)codi__att_rows(c) * (size_t)(c->n_heads / c->n_kv_heads), HD = (size_t)c->head_dim;
    return (HD + qb) * T + 2 * qb * HD + codi__work_floats((int)qb, (int)(T > HD ? T : HD));
}

typedef struct { codi_state *s; int pos, no_logits; } codi__row;   /* one position of one sequence; no_logits: lm_head may skip it */

typedef struct {
    float *xb;         /* [C, D] normed input of the current block */
    float *q;          /* [C, H*HD] */
    float *k, *v;      /* [C, KVH*HD] */
    float *att_out;    /* [C, H*HD] attention result before o_proj */
    float *delta;      /* [C, D] o_proj or down_proj output */
    float *hb, *hb2;   /* [C, F] gate and up */
    float *rope_cos, *rope_sin; /* [C, HD/2] */
    float *inv_freq;   /* [HD/2] */
    float *z;          /* [D] the latent being fed */
    float *scratch;    /* [threads, T] per-thread attention scores */
    size_t scratch_stride;
    float *att_block;  /* [threads, att_stride] blocked attention: V^T, scores, queries, outputs, GEMM work */
    size_t att_stride;
    float *work;       /* [threads, work_stride] per-thread packed activations and panels */
    size_t work_stride;  /* codi__work_floats(C, the widest matrix input) */
    codi__row *rows;   /* [C] the (state, position) of each row of a pass */
    int chunk;         /* C */
    int n_threads;
    int n_heads, ffn_dim;  /* the model shape the buffers above were sized for (with codi_state's) */
    int compute;           /* the compute mode of the model in the current pass (its products' kernels) */
    codi__pool *pool;
} codi__state_internal;

/* 1 if s was allocated for m's shape (every buffer size depends on it). */
static int codi__state_fits(const codi_model *m, const codi_state *s) {
    const codi_config *c = &m->config;
    const codi__state_internal *si = (const codi__state_internal *)s->internal;
    return s->dim == c->dim && s->n_layers == c->n_layers && s->vocab == c->vocab && s->n_kv_heads == c->n_kv_heads &&
           s->head_dim == c->head_dim && si->n_heads == c->n_heads && si->ffn_dim == c->ffn_dim;
}


/* A state whose passes take up to `chunk` positions (its scratch buffers scale with it). */
static codi_state *codi__state_alloc(const codi_model *m, int max_pos, int n_threads, int chunk) {
    const codi_config *c = &m->config;
    size_t D = (size_t)c->dim, T = (size_t)max_pos, L = (size_t)c->n_layers, C = (size_t)chunk;
    size_t QD = (size_t)c->n_heads * c->head_dim, KVD = (size_t)c->n_kv_heads * c->head_dim, F = (size_t)c->ffn_dim;
    size_t kv = L * KVD * T;
    codi_state *s;
    codi__state_internal *si;
    uint64_t resid_bytes;
    if (max_pos <= 0 || chunk <= 0 || !codi__mul_u64((L + 1) * D * sizeof(float), T, &resid_bytes) || resid_bytes > SIZE_MAX / 2 ||
        !codi__mul_u64(L * KVD * sizeof(float), T, &resid_bytes) || resid_bytes > SIZE_MAX / 2) return NULL;
    if (n_threads < 1) n_threads = 1;
#ifndef CODI_THREADS
    n_threads = 1;
#endif
    s = (codi_state *)CODI_MALLOC(sizeof *s);
    si = (codi__state_internal *)CODI_MALLOC(sizeof *si);
    if (!s || !si) { CODI_FREE(s); CODI_FREE(si); return NULL; }
    memset(s, 0, sizeof *s); memset(si, 0, sizeof *si);
    s->internal = si; s->max_pos = max_pos; s->chunk = (int)C;
    s->n_layers = c->n_layers; s->dim = c->dim; s->n_kv_heads = c->n_kv_heads; s->head_dim = c->head_dim; s->vocab = c->vocab;
    si->n_threads = n_threads; si->scratch_stride = T; si->n_heads = c->n_heads; si->ffn_dim = c->ffn_dim;
    s->resid = (float *)CODI_MALLOC((L + 1) * T * D * sizeof(float));
    s->key_cache = (float *)CODI_MALLOC(kv * sizeof(float));
    s->value_cache = (float *)CODI_MALLOC(kv * sizeof(float));
    s->final_hidden = (float *)CODI_MALLOC(D * sizeof(float));
    s->logits = (float *)CODI_MALLOC((size_t)c->vocab * sizeof(float));
    si->xb = (float *)CODI_MALLOC(C * D * sizeof(float));
    si->q = (float *)CODI_MALLOC(C * QD * sizeof(float));
    si->k = (float *)CODI_MALLOC(C * KVD * sizeof(float));
    si->v = (float *)CODI_MALLOC(C * KVD * sizeof(float));
    si->att_out = (float *)CODI_MALLOC(C * QD * sizeof(float));
    si->delta = (float *)CODI_MALLOC(C * D * sizeof(float));
    si->hb = (float *)CODI_MALLOC(C * F * sizeof(float));
    si->hb2 = (float *)CODI_MALLOC(C * F * sizeof(float));
    si->rope_cos = (float *)CODI_MALLOC(C * (size_t)c->head_dim / 2 * sizeof(float));
    si->rope_sin = (float *)CODI_MALLOC(C * (size_t)c->head_dim / 2 * sizeof(float));
    si->inv_freq = (float *)CODI_MALLOC((size_t)c->head_dim / 2 * sizeof(float));
    si->z = (float *)CODI_MALLOC(D * sizeof(float));
    si->scratch = (float *)CODI_MALLOC((size_t)n_threads * T * sizeof(float));
    si->att_stride = codi__att_floats(c, T);
    si->att_block = (float *)CODI_MALLOC((size_t)n_threads * si->att_stride * sizeof(float));
    si->work_stride = codi__work_floats((int)C, (int)(F > D ? (F > QD ? F : QD) : (D > QD ? D : QD)));
    si->work = (float *)CODI_MALLOC((size_t)n_threads * si->work_stride * sizeof(float));
    si->rows = (codi__row *)CODI_MALLOC(C * sizeof(codi__row));
    si->chunk = (int)C;
    if (!s->resid || !s->key_cache || !s->value_cache || !s->final_hidden || !s->logits || !si->xb ||
        !si->q || !si->k || !si->v || !si->att_out || !si->delta || !si->hb || !si->hb2 ||
        !si->rope_cos || !si->rope_sin || !si->inv_freq || !si->z || !si->scratch || !si->att_block || !si->work || !si->rows) {
        codi_state_free(s); return NULL;
    }
    codi__rope_inv_freq(c, si->inv_freq);
#ifdef CODI_THREADS
    if (n_threads > 1 && !(si->pool = codi__pool_new(n_threads))) { codi_state_free(s); return NULL; }
#endif
    return s;
}

CODI_API codi_state *codi_state_new(const codi_model *m, int max_pos, int n_threads) {
    return codi__state_alloc(m, max_pos, n_threads, max_pos < CODI__CHUNK ? max_pos : CODI__CHUNK);
}

CODI_API codi_state *codi_state_new_chunked(const codi_model *m, int max_pos, int n_threads, int chunk) {
    if (max_pos < 1 || chunk < 1 || chunk > max_pos) return NULL;
    return codi__state_alloc(m, max_pos, n_threads, chunk);
}

CODI_API void codi_state_free(codi_state *s) {
    codi__state_internal *si;
    if (!s) return;
    si = (codi__state_internal *)s->internal;
    if (si) {
#ifdef CODI_THREADS
        codi__pool_free(si->pool);
#endif
        CODI_FREE(si->xb); CODI_FREE(si->q); CODI_FREE(si->k); CODI_FREE(si->v); CODI_FREE(si->att_out);
        CODI_FREE(si->delta); CODI_FREE(si->hb); CODI_FREE(si->hb2); CODI_FREE(si->rope_cos);
        CODI_FREE(si->rope_sin); CODI_FREE(si->inv_freq); CODI_FREE(si->z); CODI_FREE(si->scratch); CODI_FREE(si->att_block);
        CODI_FREE(si->work); CODI_FREE(si->rows); CODI_FREE(si);
    }
    CODI_FREE(s->resid); CODI_FREE(s->key_cache); CODI_FREE(s->value_cache);
    CODI_FREE(s->final_hidden); CODI_FREE(s->logits);
    CODI_FREE(s);
}

CODI_API void codi_state_reset(codi_state *s) { s->n_pos = 0; s->phase = 0; s->step = 0; s->error[0] = 0; }

CODI_API float *codi_state_resid(codi_state *s, int layer, int pos) {
    CODI_ASSERT(layer >= 0 && layer <= s->n_layers && pos >= 0 && pos < s->max_pos);
    return s->resid + ((size_t)layer * s->max_pos + pos) * s->dim;
}

CODI_API float *codi_state_key(codi_state *s, int layer, int kv_head, int pos) {
    CODI_ASSERT(layer >= 0 && layer < s->n_layers && kv_head >= 0 && kv_head < s->n_kv_heads && pos >= 0 && pos < s->max_pos);
    return s->key_cache + (((size_t)layer * s->n_kv_heads + kv_head) * s->max_pos + pos) * s->head_dim;
}

CODI_API float *codi_state_value(codi_state *s, int layer, int kv_head, int pos) {
    CODI_ASSERT(layer >= 0 && layer < s->n_layers && kv_head >= 0 && kv_head < s->n_kv_heads && pos >= 0 && pos < s->max_pos);
    return s->value_cache + (((size_t)layer * s->n_kv_heads + kv_head) * s->max_pos + pos) * s->head_dim;
}

/* codi_rope_rotate on a config (the activation-dataset writer keeps one, not a model). */
static void codi__rope_rotate(const codi_config *c, int pos, int inverse, float *v, int n_vec) {
    int HD = c->head_dim, half = HD / 2, j, h;
    for (j = 0; j < half; j++) {                 /* the forward's f32 angle, cosf, sinf */
        float a = (float)pos * codi__rope_freq(c, j), cs = cosf(a), sn = inverse ? -sinf(a) : sinf(a);
        for (h = 0; h < n_vec; h++) {
            float *x = v + (size_t)h * HD, p = x[j], q = x[j + half];
            x[j] = p * cs - q * sn;
            x[j + half] = q * cs + p * sn;
        }
    }
}

CODI_API void codi_rope_rotate(const codi_model *m, int pos, int inverse, float *v, int n_vec) {
    codi__rope_rotate(&m->config, pos, inverse, v, n_vec);
}

CODI_API int codi_key_pre_rope(const codi_model *m, codi_state *s, int layer, int kv_head, int pos, float *out) {
    if (layer < 0 || layer >= s->n_layers || kv_head < 0 || kv_head >= s->n_kv_heads || pos < 0 || pos >= s->n_pos) {
        codi__err(s->error, sizeof s->error, "pre-RoPE key: layer %d (0..%d), kv head %d (0..%d), position %d (0..%d processed) out of range",
                  layer, s->n_layers - 1, kv_head, s->n_kv_heads - 1, pos, s->n_pos - 1);
        return -1;
    }
    memcpy(out, codi_state_key(s, layer, kv_head, pos), (size_t)s->head_dim * sizeof(float));
    codi_rope_rotate(m, pos, 1, out, 1);
    return 0;
}

CODI_API int codi_state_copy(const codi_model *m, codi_state *dst, const codi_state *src) {
    const codi_config *c = &m->config;
    size_t D = (size_t)c->dim, HD = (size_t)c->head_dim, n = (size_t)src->n_pos;
    int l, h;
    if (!codi__state_fits(m, dst) || !codi__state_fits(m, src)) {
        codi__err(dst->error, sizeof dst->error, "state copy: a state was made for another model"); return -1;
    }
    if (dst->max_pos < src->n_pos) {
        codi__err(dst->error, sizeof dst->error, "state copy: %d positions do not fit %d", src->n_pos, dst->max_pos); return -1;
    }
    for (l = 0; l <= c->n_layers; l++)
        memcpy(dst->resid + (size_t)l * dst->max_pos * D, src->resid + (size_t)l * src->max_pos * D, n * D * sizeof(float));
    for (l = 0; l < c->n_layers; l++)
        for (h = 0; h < c->n_kv_heads; h++) {
            size_t so = ((size_t)l * c->n_kv_heads + h) * src->max_pos * HD, d = ((size_t)l * c->n_kv_heads + h) * dst->max_pos * HD;
            memcpy(dst->key_cache + d, src->key_cache + so, n * HD * sizeof(float));
            memcpy(dst->value_cache + d, src->value_cache + so, n * HD * sizeof(float));
        }
    memcpy(dst->final_hidden, src->final_hidden, D * sizeof(float));
    memcpy(dst->logits, src->logits, (size_t)c->vocab * sizeof(float));
    dst->n_pos = src->n_pos; dst->phase = src->phase; dst->step = src->step;
    return 0;
}

CODI_API int codi_state_add_hook(codi_state *s, codi_hook_fn fn, void *user) {
    if (s->n_hooks >= CODI_MAX_HOOKS) return -1;
    s->hooks[s->n_hooks] = fn; s->hook_user[s->n_hooks] = user;
    return s->n_hooks++;
}

CODI_API void codi_state_clear_hooks(codi_state *s) { s->n_hooks = 0; }

/* >>reference: the whole model in one plain function: read this first -------------------------
   codi_forward_reference computes what codi_forward computes, shaped like llama2.c's run.c: one
   position at a time through every layer, a naive loop for every product, the buffers of the
   state (residuals, K/V cache, final hidden, logits) written exactly where codi_forward writes
   them and the hooks called at the same points with the same layer, position, phase and step, so
   the rest of the API works after it. This is the readable definition of the model. It is slow
   (no chunks, threads, SIMD or packed panels); the fast path is >>forward, and CODI_KERNEL=scalar
   runs that fast path on its portable scalar kernels, which is not this function.
   tests/test_reference.c holds the two equal on the golden fixtures, hooks and steering included. */

static int codi__hooks(codi_state *s, int point, int layer, int pos, float *data, int size);   /* >>forward */
static int codi__check_state(const codi_model *m, codi_state *s, int n);
static int codi__check_tokens(const codi_model *m, codi_state *s, const int32_t *tokens, int n);
static int codi__all_finite(const float *x, int n);

/* out [W.rows] = W [rows, cols] x [cols]: one dot product per output, bf16 / f16 weights widened. */
static void codi__matvec_reference(float *out, const codi_matrix *w, const float *x) {
    int r, j;
    for (r = 0; r < w->rows; r++) {
        float sum = 0;
        for (j = 0; j < w->cols; j++) sum += codi_elem_f32(w->data, w->dtype, (size_t)r * w->cols + j) * x[j];
        out[r] = sum;
    }
}

CODI_API int codi_forward_reference(const codi_model *m, codi_state *s, const int32_t *tokens, const float *embeds,
                                    int n, float *logits_out) {
    const codi_config *c = &m->config;
    codi__state_internal *si = (codi__state_internal *)s->internal;   /* scratch: the fast path's first row */
    int D = c->dim, HD = c->head_dim, H = c->n_heads, KVH = c->n_kv_heads, F = c->ffn_dim, L = c->n_layers;
    int group = H / KVH, half = HD / 2, i, j, l, h, t;
    float *xb = si->xb, *q = si->q, *k = si->k, *v = si->v, *att = si->scratch, scale = 1.0f / sqrtf((float)HD);
    if (codi__check_state(m, s, n > 0 ? n : 0)) return -1;
    if (n <= 0 || (!tokens) == (!embeds)) {
        codi__err(s->error, sizeof s->error, "forward needs n > 0 and exactly one of tokens, embeds"); return -1;
    }
    if (codi__check_tokens(m, s, tokens, n)) return -1;
    for (i = 0; i < n; i++) {
        int pos = s->n_pos + i;
        float *x = codi_state_resid(s, 0, pos);
        /* the input: a token's row of the embedding table, or a given vector (a CODI latent z) */
        if (tokens) for (j = 0; j < D; j++) x[j] = codi_elem_f32(m->w.embed.data, m->w.embed.dtype, (size_t)tokens[i] * D + j);
        else memcpy(x, embeds + (size_t)i * D, (size_t)D * sizeof(float));
        if (codi__hooks(s, CODI_HOOK_EMBED, -1, pos, x, D)) return -1;
        if (!codi__all_finite(x, D)) {
            codi__err(s->error, sizeof s->error, "input embedding at position %d is not finite (NaN or Inf)", pos); return -1;
        }
        for (l = 0; l < L; l++) {
            const codi_layer *w = &m->w.layers[l];
            float *y = codi_state_resid(s, l + 1, pos);          /* y = x + attention + MLP, in layer l + 1's slot */
            if (codi__hooks(s, CODI_HOOK_RESID, l, pos, codi_state_resid(s, l, pos), D)) return -1;
            memcpy(y, codi_state_resid(s, l, pos), (size_t)D * sizeof(float));
            /* attention: RMSNorm, then the q, k, v projections */
            codi_rmsnorm(xb, y, w->attn_norm, D, c->norm_eps);                    /* >>kernels */
            codi__matvec_reference(q, &w->wq, xb);
            codi__matvec_reference(k, &w->wk, xb);
            codi__matvec_reference(v, &w->wv, xb);
            /* RoPE: pairs (j, j + HD/2) of every q and k head turn by pos * freq_j (HF's rotate_half);
               Llama 3 scaling slows the long wavelengths by `factor`, keeps the short, blends between */
            for (j = 0; j < half; j++) {
                float f = 1.0f / powf(c->rope_theta, (float)(2 * j) / (float)HD), cs, sn;
                if (c->rope_llama3) {
                    float low_wl = (float)c->rope_original_max_pos / c->rope_low_freq_factor;
                    float high_wl = (float)c->rope_original_max_pos / c->rope_high_freq_factor;
                    float wl = 2.0f * 3.14159265358979323846f / f;
                    if (wl > low_wl) f /= c->rope_factor;
                    else if (high_wl <= wl) {
                        float smooth = ((float)c->rope_original_max_pos / wl - c->rope_low_freq_factor) /
                                       (c->rope_high_freq_factor - c->rope_low_freq_factor);
                        f = (1.0f - smooth) * f / c->rope_factor + smooth * f;
                    }
                }
                cs = cosf((float)pos * f); sn = sinf((float)pos * f);
                for (h = 0; h < H + KVH; h++) {
                    float *r = h < H ? q + (size_t)h * HD : k + (size_t)(h - H) * HD, a = r[j], b = r[j + half];
                    r[j] = a * cs - b * sn;
                    r[j + half] = b * cs + a * sn;
                }
            }
            /* the cache: this position's keys (after RoPE, as HF caches them) and values */
            if (codi__hooks(s, CODI_HOOK_KEY, l, pos, k, KVH * HD) || codi__hooks(s, CODI_HOOK_VALUE, l, pos, v, KVH * HD)) return -1;
            for (h = 0; h < KVH; h++) {
                memcpy(codi_state_key(s, l, h, pos), k + (size_t)h * HD, (size_t)HD * sizeof(float));
                memcpy(codi_state_value(s, l, h, pos), v + (size_t)h * HD, (size_t)HD * sizeof(float));
            }
            /* causal grouped-query attention: query head h reads kv head h / group at positions 0..pos */
            for (h = 0; h < H; h++) {
                const float *qh = q + (size_t)h * HD;
                float *out = si->att_out + (size_t)h * HD, mx = -FLT_MAX, sum = 0;
                for (t = 0; t <= pos; t++) {
                    const float *kt = codi_state_key(s, l, h / group, t);
                    float d = 0;
                    for (j = 0; j < HD; j++) d += qh[j] * kt[j];
                    att[t] = d * scale;
                    if (att[t] > mx) mx = att[t];
                }
                for (t = 0; t <= pos; t++) { att[t] = expf(att[t] - mx); sum += att[t]; }   /* softmax */
                for (j = 0; j < HD; j++) out[j] = 0;
                for (t = 0; t <= pos; t++) {
                    const float *vt = codi_state_value(s, l, h / group, t);
                    for (j = 0; j < HD; j++) out[j] += att[t] / sum * vt[j];
                }
            }
            codi__matvec_reference(si->delta, &w->wo, si->att_out);              /* o_proj */
            if (codi__hooks(s, CODI_HOOK_ATTN_OUT, l, pos, si->delta, D)) return -1;
            for (j = 0; j < D; j++) y[j] += si->delta[j];
            /* MLP: RMSNorm, SwiGLU down(silu(gate x) * up x) */
            codi_rmsnorm(xb, y, w->mlp_norm, D, c->norm_eps);
            codi__matvec_reference(si->hb, &w->gate, xb);
            codi__matvec_reference(si->hb2, &w->up, xb);
            for (j = 0; j < F; j++) si->hb[j] = codi__silu(si->hb[j]) * si->hb2[j];
            codi__matvec_reference(si->delta, &w->down, si->hb);
            if (codi__hooks(s, CODI_HOOK_MLP_OUT, l, pos, si->delta, D)) return -1;
            for (j = 0; j < D; j++) y[j] += si->delta[j];
        }
        /* the final norm (what lm_head and CODI's prj read), then the logits */
        if (codi__hooks(s, CODI_HOOK_RESID, L, pos, codi_state_resid(s, L, pos), D)) return -1;
        codi_rmsnorm(xb, codi_state_resid(s, L, pos), m->w.final_norm, D, c->norm_eps);
        if (codi__hooks(s, CODI_HOOK_FINAL, L, pos, xb, D)) return -1;
        memcpy(s->final_hidden, xb, (size_t)D * sizeof(float));
        if (logits_out) codi__matvec_reference(logits_out + (size_t)i * c->vocab, &m->w.lm_head, xb);
        if (i == n - 1) codi__matvec_reference(s->logits, &m->w.lm_head, xb);
    }
    s->n_pos += n;
    return 0;
}

/* >>forward: one pass of up to C positions through every layer ---------------------------- */

typedef struct {
    float *out; const float *x; const codi_matrix *w; int n;
    const codi__kernel *kn; int unit;     /* rows per work item: one GEMV pass or one GEMM panel */
    float *work; size_t work_stride;      /* [threads, work_stride] */
} codi__mm_ctx;

static void codi__mm_task(void *ctx, int tid, int u0, int u1) {
    codi__mm_ctx *c = (codi__mm_ctx *)ctx;
    int r1 = u1 * c->unit < c->w->rows ? u1 * c->unit : c->w->rows;
    codi__matmul_range(c->kn, c->out, (size_t)c->w->rows, c->x, c->w, c->n, u0 * c->unit, r1, c->work + (size_t)tid * c->work_stride);
}

/* out [n, W.rows] = x [n, W.cols] @ W^T on kernels kn, fixed row ranges split over the thread pool. */
static void codi__matmul_kn(const codi__kernel *kn, codi__pool *pool, float *work, size_t work_stride, float *out, const float *x,
                            const codi_matrix *w, int n) {
    codi__mm_ctx c;
    (void)pool;                           /* unused without CODI_THREADS */
    c.out = out; c.x = x; c.w = w; c.n = n; c.kn = kn; c.work = work; c.work_stride = work_stride;
    c.unit = c.kn->micro && n >= CODI__GEMM_MIN ? c.kn->nr : 4;
    CODI__PARALLEL(pool, codi__mm_task, &c, (w->rows + c.unit - 1) / c.unit);
}
static void codi__matmul_pool(codi__pool *pool, float *work, size_t work_stride, float *out, const float *x,
                              const codi_matrix *w, int n) {
    codi__matmul_kn(codi__kernel_active(), pool, work, work_stride, out, x, w, n);
}
/* The forward pass's products: on the kernels of the model's compute mode. */
static void codi__matmul(codi__state_internal *si, float *out, const float *x, const codi_matrix *w, int n) {
    codi__matmul_kn(codi__kernel_for(si->compute), si->pool, si->work, si->work_stride, out, x, w, n);
}

typedef struct { float *gate; const float *up; size_t n; } codi__swiglu_ctx;
#define CODI__SWIGLU_UNIT 1024

/* gate[j] = silu(gate[j]) * up[j] for j in units [a, b) of SWIGLU_UNIT (the expf calls: ~10% of a
   batched step when one thread did them). */
static void codi__swiglu_task(void *ctx, int tid, int a, int b) {
    codi__swiglu_ctx *c = (codi__swiglu_ctx *)ctx;
    size_t j, e = (size_t)b * CODI__SWIGLU_UNIT < c->n ? (size_t)b * CODI__SWIGLU_UNIT : c->n;
    (void)tid;
    for (j = (size_t)a * CODI__SWIGLU_UNIT; j < e; j++) c->gate[j] = codi__silu(c->gate[j]) * c->up[j];
}

typedef struct { const codi_config *c; codi__state_internal *si; const codi__row *rows; int layer, n, row0; } codi__att_ctx;  /* rows[0..n): the pass's rows row0.. */

/* Causal grouped-query attention for items (row i, kv head g) in [a, b): the query heads of g at
   row i against its own sequence's cached positions 0..pos, in one kernel call (scores over the
   cached positions in blocks, softmax, weighted values). */
static void codi__attention_task(void *ctx, int tid, int a, int b) {
    codi__att_ctx *ac = (codi__att_ctx *)ctx;
    const codi_config *c = ac->c;
    codi__state_internal *si = ac->si;
    int H = c->n_heads, HD = c->head_dim, KVH = c->n_kv_heads, group = H / KVH, item;
    float *sc = si->att_block + (size_t)tid * si->att_stride;       /* [group, T] scores, then weights */
    const codi__kernel *kn = codi__kernel_active();
    for (item = a; item < b; item++) {
        int i = item / KVH, g = item % KVH;
        codi_state *s = ac->rows[i].s;
        size_t off = ((size_t)(ac->row0 + i) * H + (size_t)g * group) * HD;
        kn->attend(si->att_out + off, si->q + off, group, codi_state_key(s, ac->layer, g, 0), codi_state_value(s, ac->layer, g, 0),
                   ac->rows[i].pos + 1, HD, sc);
    }
}

/* The same attention for a chunk of consecutive positions of one state (prefill), on the SIMD
   paths: items (kv head g, block of att_rows query rows), g-major so each thread transposes V
   of a kv head once. Per item: scores S = Q K^T by the GEMM over keys 0..the block's last
   position, causal softmax per query row (zero past its position), out = S V by the GEMM over
   V^T [HD, T] (keys past a row's position weigh 0). */
static void codi__attention_block_task(void *ctx, int tid, int a, int b) {
    codi__att_ctx *ac = (codi__att_ctx *)ctx;
    const codi_config *c = ac->c;
    codi__state_internal *si = ac->si;
    const codi__row *rows = ac->rows;
    codi_state *s = rows[0].s;
    int H = c->n_heads, HD = c->head_dim, group = H / c->n_kv_heads, nr = codi__att_rows(c), qb = nr * group;
    int T = rows[ac->n - 1].pos + 1, nblk = (ac->n + nr - 1) / nr, built = -1, item, i, t, j, hh;
    float *vt = si->att_block + (size_t)tid * si->att_stride;          /* [HD, T] */
    float *sc = vt + (size_t)HD * T;                                   /* [qb, T] scores, then weights */
    float *qv = sc + (size_t)qb * T, *ov = qv + (size_t)qb * HD;      /* [qb, HD] each */
    float *work = ov + (size_t)qb * HD, scale = 1.0f / sqrtf((float)HD);
    const codi__kernel *kn = codi__kernel_active();
    codi_matrix km, vm;
    for (item = a; item < b; item++) {
        int g = item / nblk, i0 = item % nblk * nr, i1 = i0 + nr < ac->n ? i0 + nr : ac->n, m = (i1 - i0) * group;
        if (g != built) {
            const float *vals = codi_state_value(s, ac->layer, g, 0);
            for (t = 0; t < T; t++)
                for (j = 0; j < HD; j++) vt[(size_t)j * T + t] = vals[(size_t)t * HD + j];
            built = g;
        }
        for (i = i0; i < i1; i++)
            memcpy(qv + (size_t)(i - i0) * group * HD, si->q + ((size_t)(ac->row0 + i) * H + (size_t)g * group) * HD, (size_t)group * HD * sizeof(float));
        km.dtype = CODI_F32; km.rows = rows[i1 - 1].pos + 1; km.cols = HD; km.data = codi_state_key(s, ac->layer, g, 0);
        codi__matmul_range(kn, sc, (size_t)T, qv, &km, m, 0, km.rows, work);
        for (i = 0; i < m; i++) {
            float *si_row = sc + (size_t)i * T, mx = -FLT_MAX, sum = 0;
            int p = rows[i0 + i / group].pos;
            for (t = 0; t <= p; t++) { si_row[t] *= scale; if (si_row[t] > mx) mx = si_row[t]; }
            for (t = 0; t <= p; t++) { si_row[t] = expf(si_row[t] - mx); sum += si_row[t]; }
            for (t = 0; t <= p; t++) si_row[t] /= sum;
            for (; t < T; t++) si_row[t] = 0;
        }
        vm.dtype = CODI_F32; vm.rows = HD; vm.cols = T; vm.data = vt;
        codi__matmul_range(kn, ov, (size_t)HD, sc, &vm, m, 0, HD, work);
        for (i = i0; i < i1; i++)
            for (hh = 0; hh < group; hh++)
                memcpy(si->att_out + ((size_t)(ac->row0 + i) * H + (size_t)g * group + hh) * HD, ov + ((size_t)(i - i0) * group + hh) * HD, (size_t)HD * sizeof(float));
    }
}

/* The rows from i on that are consecutive positions of rows[i]'s state (a prefill segment). */
static int codi__segment_end(const codi__row *rows, int i, int n) {
    int j = i + 1;
    while (j < n && rows[j].s == rows[i].s && rows[j].pos == rows[j - 1].pos + 1) j++;
    return j;
}

/* Attention for every row: each segment of att_rows+ consecutive positions of one state by the
   blocked GEMMs (SIMD paths), the other rows (decode steps, short segments) row by row. */
static void codi__attention_rows(const codi_config *c, codi__state_internal *si, const codi__row *rows, int n, int layer) {
    codi__att_ctx ac;
    int i = 0, j, nr = codi__att_rows(c), micro = codi__kernel_active()->micro != NULL;
    ac.c = c; ac.si = si; ac.layer = layer;
    while (i < n) {
        int blocked;
        j = codi__segment_end(rows, i, n);
        blocked = micro && j - i >= nr;
        while (!blocked && j < n) {                        /* row by row up to the next long segment */
            int e = codi__segment_end(rows, j, n);
            if (micro && e - j >= nr) break;
            j = e;
        }
        ac.rows = rows + i; ac.n = j - i; ac.row0 = i;
        if (blocked)
            CODI__PARALLEL(si->pool, codi__attention_block_task, &ac, c->n_kv_heads * ((j - i + nr - 1) / nr));
        else CODI__PARALLEL(si->pool, codi__attention_task, &ac, (j - i) * c->n_kv_heads);
        i = j;
    }
}

/* RMSNorm of rows' residuals into xb, rows split over the pool. */
typedef struct { const codi_config *c; codi__state_internal *si; const codi__row *rows; int layer; const float *weight; } codi__rows_ctx;
static void codi__norm_task(void *ctx, int tid, int a, int b) {
    codi__rows_ctx *rc = (codi__rows_ctx *)ctx;
    int D = rc->c->dim, i;
    (void)tid;
    for (i = a; i < b; i++)
        codi_rmsnorm(rc->si->xb + (size_t)i * D, codi_state_resid(rc->rows[i].s, rc->layer, rc->rows[i].pos), rc->weight, D, rc->c->norm_eps);
}

/* Calls every hook on data; -1 (with s->error) when one asks to stop. */
static int codi__hooks(codi_state *s, int point, int layer, int pos, float *data, int size) {
    codi_hook_info info;
    int k, rc;
    if (!s->n_hooks) return 0;
    info.point = point; info.layer = layer; info.pos = pos; info.phase = s->phase; info.step = s->step; info.size = size;
    for (k = 0; k < s->n_hooks; k++)
        if ((rc = s->hooks[k](s->hook_user[k], &info, data)) != 0) {
            codi__err(s->error, sizeof s->error, "hook %d stopped the forward pass at point %d, layer %d, position %d (code %d)", k, point, layer, pos, rc);
            return -1;
        }
    return 0;
}

static int codi__all_finite(const float *x, int n) {
    int i;
    for (i = 0; i < n; i++) if (!(x[i] - x[i] == 0)) return 0;
    return 1;
}

/* 1 if x [n] and its mean square as a float (what RMSNorm divides by) are finite. */
static int codi__mean_square_finite(const float *x, int n) {
    double ss = 0;
    float ms;
    int i;
    for (i = 0; i < n; i++) ss += (double)x[i] * x[i];
    ms = (float)(ss / n);
    return ss - ss == 0 && ms - ms == 0;
}

/* One pass through every layer for n rows, row i = position rows[i].pos of sequence rows[i].s:
   the positions of one state's chunk, or one new position of each of n states (a batch). Scratch
   and threads are si's. Logits: logits_out [n, V] for every row; else with logits_rows = 1 the
   last row's into its state, with 2 those of each state's last row in the pass into that state
   (a state's rows are consecutive), unless that row is marked no_logits. */
static int codi__forward_rows(const codi_model *m, codi__state_internal *si, const codi__row *rows, int n,
                              const int32_t *tokens, const float *embeds, float *logits_out, int logits_rows) {
    const codi_config *c = &m->config;
    int D = c->dim, HD = c->head_dim, H = c->n_heads, KVH = c->n_kv_heads, F = c->ffn_dim, L = c->n_layers;
    int QD = H * HD, KVD = KVH * HD, i, j, l, h;
    codi__rows_ctx rc;
    codi__swiglu_ctx sw;
    si->compute = m->compute;
#define RESID(l, i) codi_state_resid(rows[i].s, l, rows[i].pos)   /* [D] residual entering layer l at row i */
#define HOOK(point, l, i, data, size) codi__hooks(rows[i].s, point, l, rows[i].pos, data, size)

    /* 1. input embeddings: token rows or given vectors -> residual entering layer 0 */
    for (i = 0; i < n; i++) {
        float *x = RESID(0, i);
        if (tokens) codi__row_f32(x, &m->w.embed, tokens[i]);
        else memcpy(x, embeds + (size_t)i * D, (size_t)D * sizeof(float));
        if (HOOK(CODI_HOOK_EMBED, -1, i, x, D)) return -1;
        if (!codi__all_finite(x, D)) {
            codi__err(rows[i].s->error, sizeof rows[i].s->error, "input embedding at position %d is not finite (NaN or Inf)", rows[i].pos);
            return -1;
        }
    }
    /* 2. rotary angles of these positions: angle = pos * inv_freq (f32, as HF) */
    for (i = 0; i < n; i++)
        for (j = 0; j < HD / 2; j++) {
            float a = (float)rows[i].pos * si->inv_freq[j];
            si->rope_cos[(size_t)i * (HD / 2) + j] = cosf(a);
            si->rope_sin[(size_t)i * (HD / 2) + j] = sinf(a);
        }
    for (l = 0; l < L; l++) {
        const codi_layer *w = &m->w.layers[l];
        for (i = 0; i < n; i++) {                           /* y = x + attn + mlp, built in place in layer l + 1's slot */
            if (HOOK(CODI_HOOK_RESID, l, i, RESID(l, i), D)) return -1;
            memcpy(RESID(l + 1, i), RESID(l, i), (size_t)D * sizeof(float));
        }
        /* 3. attention: norm, q/k/v, RoPE, cache write, causal GQA, o_proj, residual add */
        rc.c = c; rc.si = si; rc.rows = rows; rc.layer = l + 1; rc.weight = w->attn_norm;
        CODI__PARALLEL(si->pool, codi__norm_task, &rc, n);
        codi__matmul(si, si->q, si->xb, &w->wq, n);
        codi__matmul(si, si->k, si->xb, &w->wk, n);
        codi__matmul(si, si->v, si->xb, &w->wv, n);
        for (i = 0; i < n; i++) {
            float *k = si->k + (size_t)i * KVD, *v = si->v + (size_t)i * KVD;
            codi__rope(si->q + (size_t)i * QD, H, HD, si->rope_cos + (size_t)i * (HD / 2), si->rope_sin + (size_t)i * (HD / 2));
            codi__rope(k, KVH, HD, si->rope_cos + (size_t)i * (HD / 2), si->rope_sin + (size_t)i * (HD / 2));
            if (HOOK(CODI_HOOK_KEY, l, i, k, KVD) || HOOK(CODI_HOOK_VALUE, l, i, v, KVD)) return -1;
            for (h = 0; h < KVH; h++) {
                memcpy(codi_state_key(rows[i].s, l, h, rows[i].pos), k + (size_t)h * HD, (size_t)HD * sizeof(float));
                memcpy(codi_state_value(rows[i].s, l, h, rows[i].pos), v + (size_t)h * HD, (size_t)HD * sizeof(float));
            }
        }
        codi__attention_rows(c, si, rows, n, l);
        codi__matmul(si, si->delta, si->att_out, &w->wo, n);
        for (i = 0; i < n; i++) {
            float *d = si->delta + (size_t)i * D, *yi = RESID(l + 1, i);
            if (HOOK(CODI_HOOK_ATTN_OUT, l, i, d, D)) return -1;
            for (j = 0; j < D; j++) yi[j] += d[j];
        }
        /* 4. MLP: norm, SwiGLU (silu(gate) * up), down_proj, residual add */
        rc.weight = w->mlp_norm;
        CODI__PARALLEL(si->pool, codi__norm_task, &rc, n);
        codi__matmul(si, si->hb, si->xb, &w->gate, n);
        codi__matmul(si, si->hb2, si->xb, &w->up, n);
        sw.gate = si->hb; sw.up = si->hb2; sw.n = (size_t)n * F;
        CODI__PARALLEL(si->pool, codi__swiglu_task, &sw, (int)((sw.n + CODI__SWIGLU_UNIT - 1) / CODI__SWIGLU_UNIT));
        codi__matmul(si, si->delta, si->hb, &w->down, n);
        for (i = 0; i < n; i++) {
            float *d = si->delta + (size_t)i * D, *yi = RESID(l + 1, i);
            if (HOOK(CODI_HOOK_MLP_OUT, l, i, d, D)) return -1;
            for (j = 0; j < D; j++) yi[j] += d[j];
        }
    }
    /* 5. final norm (what lm_head and prj read; each state keeps its last row's), then logits */
    for (i = 0; i < n; i++) {
        float *xl = RESID(L, i), *xb = si->xb + (size_t)i * D;
        if (HOOK(CODI_HOOK_RESID, L, i, xl, D)) return -1;
        if (!codi__mean_square_finite(xl, D)) {   /* the norm would read zeros (or NaN): an edit or the weights overflowed */
            codi__err(rows[i].s->error, sizeof rows[i].s->error, "residual stream at position %d is not finite (NaN, Inf, or a mean square past float range)", rows[i].pos);
            return -1;
        }
        codi_rmsnorm(xb, xl, m->w.final_norm, D, c->norm_eps);
        if (HOOK(CODI_HOOK_FINAL, L, i, xb, D)) return -1;
        if (!codi__all_finite(xb, D)) {                   /* an edit or the weights overflowed: no answer from NaN logits */
            codi__err(rows[i].s->error, sizeof rows[i].s->error, "final hidden state at position %d is not finite (NaN or Inf)", rows[i].pos);
            return -1;
        }
        memcpy(rows[i].s->final_hidden, xb, (size_t)D * sizeof(float));
    }
    if (logits_out) {
        codi__matmul(si, logits_out, si->xb, &m->w.lm_head, n);
        memcpy(rows[n - 1].s->logits, logits_out + (size_t)(n - 1) * c->vocab, (size_t)c->vocab * sizeof(float));
    } else if (logits_rows == 1) codi__matmul(si, rows[n - 1].s->logits, si->xb + (size_t)(n - 1) * D, &m->w.lm_head, 1);
    else if (logits_rows == 2) {
        int nl = 0, last = 0;
#define GIVES_LOGITS(i) (((i) + 1 == n || rows[(i) + 1].s != rows[i].s) && !rows[i].no_logits)
        for (i = 0; i < n; i++)                /* the rows that give logits, moved to the front of xb */
            if (GIVES_LOGITS(i)) {
                if (nl != i) memcpy(si->xb + (size_t)nl * D, si->xb + (size_t)i * D, (size_t)D * sizeof(float));
                nl++; last = i;
            }
        if (nl == 1) codi__matmul(si, rows[last].s->logits, si->xb, &m->w.lm_head, 1);
        else if (nl > 1) {       /* blocks of vocabulary rows whose [nl, rows] logits fit the free hb buffer: lm_head read once */
            codi_matrix part = m->w.lm_head;
            int vb = (int)((size_t)si->chunk * F / (size_t)nl), v0, k;      /* >= F: nl <= C */
            if (vb > 64) vb -= vb % 64;
            for (v0 = 0; v0 < c->vocab; v0 += vb) {
                part.rows = c->vocab - v0 < vb ? c->vocab - v0 : vb;
                part.data = (const char *)m->w.lm_head.data + (size_t)v0 * D * codi__dtype_size(part.dtype);
                codi__matmul(si, si->hb, si->xb, &part, nl);
                for (i = 0, k = 0; i < n; i++)
                    if (GIVES_LOGITS(i)) { memcpy(rows[i].s->logits + v0, si->hb + (size_t)k * part.rows, (size_t)part.rows * sizeof(float)); k++; }
            }
        }
#undef GIVES_LOGITS
    }
    for (i = 0; i < n; i++) rows[i].s->n_pos = rows[i].pos + 1;
    return 0;
#undef HOOK
#undef RESID
}

/* The checks every forward call makes on a state: the model's, room for n more positions. */
static int codi__check_state(const codi_model *m, codi_state *s, int n) {
    s->error[0] = 0;
    if (!codi__state_fits(m, s)) {
        codi__err(s->error, sizeof s->error, "state was made for another model (its dim, layers, heads, kv heads, head_dim, ffn or vocab differ)");
        return -1;
    }
    if (n > s->max_pos - s->n_pos) {
        codi__err(s->error, sizeof s->error, "state holds %d positions; %d + %d do not fit", s->max_pos, s->n_pos, n); return -1;
    }
    return 0;
}

static int codi__check_tokens(const codi_model *m, codi_state *s, const int32_t *tokens, int n) {
    int i;
    for (i = 0; tokens && i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->config.vocab) {
            codi__err(s->error, sizeof s->error, "token id %ld at input %d is out of range [0, %d)", (long)tokens[i], i, m->config.vocab); return -1;
        }
    return 0;
}

CODI_API int codi_forward(const codi_model *m, codi_state *s, const int32_t *tokens, const float *embeds,
                          int n, float *logits_out) {
    codi__state_internal *si = (codi__state_internal *)s->internal;
    int i, done;
    if (codi__check_state(m, s, n > 0 ? n : 0)) return -1;
    if (n <= 0 || (!tokens) == (!embeds)) {
        codi__err(s->error, sizeof s->error, "forward needs n > 0 and exactly one of tokens, embeds"); return -1;
    }
    if (codi__check_tokens(m, s, tokens, n)) return -1;
    for (done = 0; done < n; done += s->chunk) {              /* chunks of C positions: one pass over the weights each */
        int nc = n - done < s->chunk ? n - done : s->chunk;
        for (i = 0; i < nc; i++) { si->rows[i].s = s; si->rows[i].pos = s->n_pos + i; si->rows[i].no_logits = 0; }
        if (codi__forward_rows(m, si, si->rows, nc, tokens ? tokens + done : NULL, embeds ? embeds + (size_t)done * m->config.dim : NULL,
                               logits_out ? logits_out + (size_t)done * m->config.vocab : NULL, done + nc == n))
            return -1;
    }
    return 0;
}

CODI_API int codi_forward_batch(const codi_model *m, codi_state *const *states, const int32_t *tokens, const float *embeds, int n) {
    codi__state_internal *si;
    int i, j, done;
    if (n <= 0 || !states || !states[0]) return -1;
    si = (codi__state_internal *)states[0]->internal;
    if ((!tokens) == (!embeds)) {
        codi__err(states[0]->error, sizeof states[0]->error, "forward_batch needs exactly one of tokens, embeds"); return -1;
    }
    for (i = 0; i < n; i++) {
        if (!states[i]) { codi__err(states[0]->error, sizeof states[0]->error, "forward_batch: state %d is NULL", i); return -1; }
        if (codi__check_state(m, states[i], 1) || codi__check_tokens(m, states[i], tokens ? tokens + i : NULL, 1)) return -1;
        if ((size_t)states[i]->n_pos >= si->scratch_stride) {     /* attention scores live in the first state's buffers */
            codi__err(states[i]->error, sizeof states[i]->error, "forward_batch: position %d is past the first state's capacity; "
                      "give states[0] the largest max_pos", states[i]->n_pos); return -1;
        }
        for (j = 0; j < i; j++)
            if (states[j] == states[i]) { codi__err(states[i]->error, sizeof states[i]->error, "forward_batch: state %d is also state %d", i, j); return -1; }
    }
    for (done = 0; done < n; done += states[0]->chunk) {        /* groups of C sequences: one pass over the weights each */
        int nc = n - done < states[0]->chunk ? n - done : states[0]->chunk;
        for (i = 0; i < nc; i++) { si->rows[i].s = states[done + i]; si->rows[i].pos = states[done + i]->n_pos; si->rows[i].no_logits = 0; }
        if (codi__forward_rows(m, si, si->rows, nc, tokens ? tokens + done : NULL, embeds ? embeds + (size_t)done * m->config.dim : NULL, NULL, 2))
            return -1;
    }
    return 0;
}

/* >>codi: the latent loop and greedy answer of zhenyi4/codi test.py ---------------------------- */

CODI_API int codi_project(const codi_model *m, const float *h, float *z) {
    const codi_config *c = &m->config;
    float *t, *u, *work;
    int i;
    if (!c->prj_dim) return -1;
    t = (float *)CODI_MALLOC((size_t)c->prj_dim * sizeof(float));
    u = (float *)CODI_MALLOC((size_t)c->dim * sizeof(float));
    work = (float *)CODI_MALLOC(((size_t)c->dim + c->prj_dim) * sizeof(float));
    if (!t || !u || !work) { CODI_FREE(t); CODI_FREE(u); CODI_FREE(work); return -1; }
    codi__matmul_range(codi__kernel_active(), t, 0, h, &m->w.prj1, 1, 0, c->prj_dim, work);   /* Linear(D, P) */
    for (i = 0; i < c->prj_dim; i++) t[i] = codi__gelu(t[i] + m->w.prj1_b[i]);        /* + bias, GELU(erf) */
    codi__matmul_range(codi__kernel_active(), u, 0, t, &m->w.prj3, 1, 0, c->dim, work);       /* Linear(P, D) */
    for (i = 0; i < c->dim; i++) u[i] += m->w.prj3_b[i];
    codi__layernorm(z, u, m->w.prj_ln_w, m->w.prj_ln_b, c->dim, c->ln_eps);
    CODI_FREE(t); CODI_FREE(u); CODI_FREE(work);
    return 0;
}

CODI_API int codi_latent_step(const codi_model *m, codi_state *s, float *z_out) {
    codi__state_internal *si = (codi__state_internal *)s->internal;
    if (!m->config.prj_dim) { codi__err(s->error, sizeof s->error, "this model has no prj: not a CODI checkpoint"); return -1; }
    if (s->n_pos == 0) { codi__err(s->error, sizeof s->error, "a latent step needs a prefilled state"); return -1; }
    if (codi_project(m, s->final_hidden, si->z)) { codi__err(s->error, sizeof s->error, "out of memory"); return -1; }
    if (codi_forward(m, s, NULL, si->z, 1, NULL)) return -1;
    if (z_out) memcpy(z_out, codi_state_resid(s, 0, s->n_pos - 1), (size_t)m->config.dim * sizeof(float));
    return 0;
}

CODI_API int codi_argmax_answer(const codi_model *m, const float *logits) {
    int i, best = 0;
    for (i = 1; i < m->config.vocab - 1; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

CODI_API codi_run_opts codi_run_opts_default(const codi_model *m) {
    codi_run_opts o;
    (void)m;
    memset(&o, 0, sizeof o);
    o.n_latent = 6; o.max_answer = 256; o.stop_at_eos = 1; o.feed_eot = 1;
    return o;
}

CODI_API int codi_is_eos(const codi_config *c, int id) {
    int i;
    for (i = 0; i < c->n_eos; i++) if (c->eos_ids[i] == id) return 1;
    return 0;
}

/* o->after_latent after latent step k (0: the prefill); 0, or -1 with s->error. */
static int codi__after_latent(const codi_run_opts *o, codi_state *s, int k) {
    if (!o->after_latent || o->after_latent(o->after_latent_user, s, k, o->n_latent) == 0) return 0;
    if (!s->error[0]) codi__err(s->error, sizeof s->error, "the after_latent callback stopped the run after latent step %d", k);
    return -1;
}

CODI_API int codi_run_latents(const codi_model *m, codi_state *s, const int32_t *ids, int n,
                              const codi_run_opts *o, codi_run_result *r) {
    const codi_config *c = &m->config;
    int k, V = c->vocab, D = c->dim;
    memset(r, 0, sizeof *r);
    codi_state_reset(s);
    if (o->n_latent < 0 || o->max_answer < 0 || o->max_answer > (int)(sizeof r->answer / sizeof *r->answer)) {
        codi__err(s->error, sizeof s->error, "n_latent must be >= 0 and max_answer in [0, %d]", (int)(sizeof r->answer / sizeof *r->answer));
        return -1;
    }
    if (o->n_latent > 0 && !c->prj_dim) { codi__err(s->error, sizeof s->error, "this model has no prj: not a CODI checkpoint"); return -1; }
    /* prefill: question ids ending with bot; its last final hidden makes z_1 */
    s->phase = CODI_PHASE_PREFILL; s->step = 0;
    if (codi_forward(m, s, ids, NULL, n, NULL)) return -1;
    r->prompt_len = n;
    if (o->latent_logits) memcpy(o->latent_logits, s->logits, (size_t)V * sizeof(float));
    if (codi__after_latent(o, s, 0)) return -1;
    /* latent steps: z_k = prj(final hidden of the previous position), fed as an embedding */
    for (k = 1; k <= o->n_latent; k++) {
        s->phase = CODI_PHASE_LATENT; s->step = k;
        if (codi_latent_step(m, s, o->latents ? o->latents + (size_t)(k - 1) * D : NULL)) return -1;
        if (o->latent_logits) memcpy(o->latent_logits + (size_t)k * V, s->logits, (size_t)V * sizeof(float));
        if (codi__after_latent(o, s, k)) return -1;
    }
    if (o->latents && c->prj_dim && codi_project(m, s->final_hidden, o->latents + (size_t)o->n_latent * D)) {
        codi__err(s->error, sizeof s->error, "out of memory"); return -1;
    }
    return 0;
}

CODI_API int codi_run_answer(const codi_model *m, codi_state *s, const codi_run_opts *o, codi_run_result *r) {
    const codi_config *c = &m->config;
    int j, V = c->vocab, cap = (int)(sizeof r->answer / sizeof *r->answer);
    r->n_answer = 0;
    if (o->max_answer < 0 || o->max_answer > cap) {
        codi__err(s->error, sizeof s->error, "max_answer %d must be in [0, %d]", o->max_answer, cap); return -1;
    }
    if (!codi__state_fits(m, s)) { codi__err(s->error, sizeof s->error, "state was made for another model"); return -1; }
    if (s->n_pos == 0 && !o->feed_eot) { codi__err(s->error, sizeof s->error, "the answer needs a prefilled state (call codi_run_latents first)"); return -1; }
    if (o->feed_eot && c->eot_id < 0) { codi__err(s->error, sizeof s->error, "this model has no CODI eot token to feed (set feed_eot = 0)"); return -1; }
    /* answer: eot, then greedy tokens over every id but the last, fed back */
    s->phase = CODI_PHASE_ANSWER; s->step = 0;
    if (o->feed_eot) {
        int32_t eot = c->eot_id;
        if (codi_forward(m, s, &eot, NULL, 1, NULL)) return -1;
    }
    for (j = 0; j < o->max_answer; j++) {
        int32_t tok = codi_argmax_answer(m, s->logits);
        if (o->answer_logits) memcpy(o->answer_logits + (size_t)j * V, s->logits, (size_t)V * sizeof(float));
        r->answer[r->n_answer++] = tok;
        if (o->on_token) o->on_token(o->on_token_user, tok);
        if ((o->stop_at_eos && codi_is_eos(c, tok)) || j + 1 == o->max_answer) break;
        s->step = j + 1;
        if (codi_forward(m, s, &tok, NULL, 1, NULL)) return -1;
    }
    return 0;
}

CODI_API int codi_run(const codi_model *m, codi_state *s, const int32_t *ids, int n,
                      const codi_run_opts *o, codi_run_result *r) {
    if (codi_run_latents(m, s, ids, n, o, r)) return -1;
    return codi_run_answer(m, s, o, r);
}

#define CODI__LLAMA3_EOT_ID 128009   /* <|eot_id|>, the research prompt's separator */

CODI_API int codi_prompt_check(const codi_model *m, int recipe, char *err, size_t errsz) {
    const codi_config *c = &m->config;
    if (recipe != 0 && recipe != 1) {
        codi__err(err, errsz, "recipe %d is unknown: 0 is BOS q bot (zhenyi4/codi), 1 is BOS q <|eot_id|> bot", recipe); return -1;
    }
    if (c->bos_id < 0) {
        codi__err(err, errsz, "the model has no BOS id: its config.json gives no bos_token_id and Llama 3's 128000 is outside its "
                  "vocabulary (%d ids); add bos_token_id to config.json", c->vocab);
        return -1;
    }
    if (c->bot_id < 0) {
        codi__err(err, errsz, "the model has no CODI bot token (no prj and no base_vocab): not a CODI checkpoint"); return -1;
    }
    if (recipe == 1 && CODI__LLAMA3_EOT_ID >= c->vocab) {
        codi__err(err, errsz, "recipe 1 needs Llama 3's <|eot_id|> (id %d), but this model's vocabulary has %d ids; "
                  "use recipe 0 (BOS q bot) with this model", CODI__LLAMA3_EOT_ID, c->vocab);
        return -1;
    }
    return 0;
}

CODI_API int codi_prompt_ids(const codi_model *m, int recipe, const int32_t *q, int nq, int32_t *out, int out_cap) {
    int n = 0, i, need = nq + 2 + (recipe == 1);
    if (need > out_cap || nq < 0 || codi_prompt_check(m, recipe, NULL, 0)) return -1;
    out[n++] = m->config.bos_id;
    for (i = 0; i < nq; i++) out[n++] = q[i];
    if (recipe == 1) out[n++] = CODI__LLAMA3_EOT_ID;
    out[n++] = m->config.bot_id;
    return n;
}

CODI_API int codi_extract_answer(const char *text, double *out) {
    const char *p = text;
    char buf[64];
    size_t k = 0;
    int found = 0;
    /* CODI: re.findall(r'-?\d+\.?\d*', text.replace(',', ''))[-1] */
    while (*p) {
        const char *start = p;
        if (*p == '-' && p[1] >= '0' && p[1] <= '9') p++;
        if (*p >= '0' && *p <= '9') {
            k = 0;
            if (*start == '-') buf[k++] = '-';
            while ((*p >= '0' && *p <= '9') || *p == ',') { if (*p != ',' && k < sizeof buf - 2) buf[k++] = *p; p++; }
            if (*p == '.') {
                buf[k++] = *p++;
                while ((*p >= '0' && *p <= '9') || *p == ',') { if (*p != ',' && k < sizeof buf - 1) buf[k++] = *p; p++; }
            }
            buf[k] = 0;
            *out = strtod(buf, NULL);
            found = 1;
        } else p = start + 1;
    }
    return found;
}

/* ======== PART II. THE INSTRUMENTS: steering and patching, the tokenizer, the lenses ============ */

/* >>steer: steering and patching through the hooks; the spec parser; random vectors; means ---- */

CODI_API void codi_rng_seed(codi_rng *r, uint64_t seed) { r->state = seed; r->spare = 0; r->has_spare = 0; }

CODI_API double codi_rng_uniform(codi_rng *r) { return (double)(codi_splitmix64(&r->state) >> 11) * (1.0 / 9007199254740992.0); }

CODI_API double codi_rng_normal(codi_rng *r) {
    double u, v, q, f;
    if (r->has_spare) { r->has_spare = 0; return r->spare; }
    do {                                               /* a point uniform in the unit disc */
        u = 2 * codi_rng_uniform(r) - 1; v = 2 * codi_rng_uniform(r) - 1; q = u * u + v * v;
    } while (q >= 1 || q == 0);
    f = sqrt(-2 * log(q) / q);
    r->spare = v * f; r->has_spare = 1;
    return u * f;
}

/* out [n] = a seeded Gaussian direction scaled to L2 norm `norm` (the draws are made twice, from a
   copy of the generator: once for their norm, once for the values). */
CODI_API void codi_rng_direction(codi_rng *r, float *out, long n, double norm) {
    codi_rng again = *r;
    double ss = 0, g;
    long i;
    for (i = 0; i < n; i++) { g = codi_rng_normal(r); ss += g * g; }
    for (i = 0; i < n; i++) out[i] = (float)(codi_rng_normal(&again) * norm / sqrt(ss));
}

CODI_API double codi_l2_norm(const float *x, long n) {
    double ss = 0; long i;
    for (i = 0; i < n; i++) ss += (double)x[i] * x[i];
    return sqrt(ss);
}

/* x [n] += alpha v (steering), or x := v (patching; alpha other than 1 blends x += alpha (v - x)).
   alpha 0 touches nothing, so it is bit-identical to no edit. */
static void codi__edit_vector(int op, float alpha, float *x, const float *v, int n) {
    int i;
    if (alpha == 0) return;
    if (op == CODI_EDIT_SET && alpha == 1) memcpy(x, v, (size_t)n * sizeof(float));
    else if (op == CODI_EDIT_SET) for (i = 0; i < n; i++) x[i] += alpha * (v[i] - x[i]);
    else for (i = 0; i < n; i++) x[i] += alpha * v[i];
}

static int codi__edit_fires(const codi_edit *e, const codi_hook_info *info) {
    return (e->phase == CODI_ALL || e->phase == info->phase) && (e->step == CODI_ALL || e->step == info->step) &&
           (e->layer == CODI_ALL || e->layer == info->layer);
}

/* Noise with x's own scalar mean and std: v = mean(x) + std(x) g (g [n] fixed N(0, 1) draws), then
   added or set like a vector. */
static void codi__edit_noise(int op, float alpha, float *x, const float *g, int n) {
    double mean = 0, sd = 0;
    int i;
    if (alpha == 0) return;
    for (i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (i = 0; i < n; i++) sd += (x[i] - mean) * (x[i] - mean);
    sd = sqrt(sd / n);
    for (i = 0; i < n; i++) {
        float v = (float)(mean + sd * g[i]);
        x[i] = op == CODI_EDIT_ADD ? x[i] + alpha * v : alpha == 1 ? v : x[i] + alpha * (v - x[i]);
    }
}

/* Embedding steering / latent patching: z_k [D], the latent input of step k, before it is fed. */
static void codi__steer_latent_input(const codi_edit *e, const codi_hook_info *info, float *z) {
    if (info->point != CODI_HOOK_EMBED || !codi__edit_fires(e, info)) return;
    if (e->noise_self) codi__edit_noise(e->op, e->alpha, z, e->vector, info->size);
    else codi__edit_vector(e->op, e->alpha, z, e->vector, info->size);
}

/* Activation steering / patching of resid, final, attn_out or mlp_out [D] (a row per layer or one). */
static void codi__steer_activation(const codi_edit *e, const codi_hook_info *info, float *x) {
    static const int point[CODI_AT_COUNT] = { -1, CODI_HOOK_RESID, CODI_HOOK_FINAL, CODI_HOOK_ATTN_OUT, CODI_HOOK_MLP_OUT, -1, -1, -1 };
    size_t row = e->vector_len > info->size ? (size_t)info->layer * info->size : 0;
    if (info->point != point[e->at] || !codi__edit_fires(e, info)) return;
    if (e->noise_self) codi__edit_noise(e->op, e->alpha, x, e->vector + row, info->size);
    else codi__edit_vector(e->op, e->alpha, x, e->vector + row, info->size);
}

/* Key / value steering as they are written to the cache: kv [KVH*HD] of one position and layer;
   the edit's vector is [L, KVH*HD]. */
static void codi__steer_kv_write(const codi_steer *st, const codi_edit *e, const codi_hook_info *info, float *kv) {
    int h, HD = st->head_dim;
    const float *row;
    if (info->point != (e->at == CODI_AT_KEY ? CODI_HOOK_KEY : CODI_HOOK_VALUE) || !codi__edit_fires(e, info)) return;
    row = e->vector + (size_t)info->layer * info->size;       /* only here: the layer is -1 at other hooks */
    for (h = 0; h < st->n_kv_heads; h++)
        if (e->head == CODI_ALL || e->head == h) codi__edit_vector(e->op, e->alpha, kv + (size_t)h * HD, row + (size_t)h * HD, HD);
}

/* The one hook of an intervention set: every edit, in order. */
static int codi__steer_hook(void *user, const codi_hook_info *info, float *data) {
    const codi_steer *st = (const codi_steer *)user;
    int i;
    for (i = 0; i < st->n_edits; i++) {
        const codi_edit *e = &st->edits[i];
        if (e->at == CODI_AT_LATENT_INPUT) codi__steer_latent_input(e, info, data);
        else if (e->at == CODI_AT_KEY || e->at == CODI_AT_VALUE) codi__steer_kv_write(st, e, info, data);
        else if (e->at != CODI_AT_KV_CACHE) codi__steer_activation(e, info, data);
    }
    return 0;
}

/* KV-cache steering: edits the cached keys and values of the chosen layers, heads and positions
   once, after latent step k (T0 = s->n_pos - k); every later position attends to them. */
static int codi__steer_kv_cache(const codi_steer *st, const codi_edit *e, int index, codi_state *s, int k) {
    int T0 = s->n_pos - k, n = e->pos_latent == CODI_ALL ? k : e->pos_latent > 0 || e->pos_latent == CODI_LAST ? 1 : e->n_positions;
    int i, l, h, KVD = st->n_kv_heads * st->head_dim;
    for (i = 0; i < n; i++) {
        int p = e->pos_latent == CODI_ALL ? T0 + i : e->pos_latent == CODI_LAST ? s->n_pos - 1 : e->pos_latent > 0 ? T0 + e->pos_latent - 1 : e->positions[i];
        if (p < 0 || p >= s->n_pos) {
            codi__err(s->error, sizeof s->error, "steer edit %d (kv_cache): position %d is not cached after latent step %d (0..%d)",
                      index, p, k, s->n_pos - 1);
            return -1;
        }
        for (l = 0; l < st->n_layers; l++)
            for (h = 0; h < st->n_kv_heads; h++) {
                size_t off = (size_t)l * KVD + (size_t)h * st->head_dim;
                if ((e->layer != CODI_ALL && e->layer != l) || (e->head != CODI_ALL && e->head != h)) continue;
                if (e->key_vector) codi__edit_vector(e->op, e->alpha, codi_state_key(s, l, h, p), e->key_vector + off, st->head_dim);
                if (e->value_vector) codi__edit_vector(e->op, e->alpha, codi_state_value(s, l, h, p), e->value_vector + off, st->head_dim);
            }
    }
    return 0;
}

CODI_API int codi_steer_after_latent(void *user, codi_state *s, int k, int n_latent) {
    const codi_steer *st = (const codi_steer *)user;
    int i;
    for (i = 0; i < st->n_edits; i++) {
        const codi_edit *e = &st->edits[i];
        if (e->at == CODI_AT_KV_CACHE && k == (e->when == CODI_ALL ? n_latent : e->when) && codi__steer_kv_cache(st, e, i, s, k))
            return -1;
    }
    return 0;
}

CODI_API codi_edit codi_edit_default(void) {
    codi_edit e;
    memset(&e, 0, sizeof e);
    e.at = CODI_AT_LATENT_INPUT; e.phase = e.step = e.layer = e.head = e.when = e.pos_latent = CODI_ALL;
    e.op = CODI_EDIT_ADD; e.alpha = 1;
    return e;
}

CODI_API codi_edit codi_edit_latent_add(int step, const float *vector, long len, float alpha) {
    codi_edit e = codi_edit_default();
    e.phase = CODI_PHASE_LATENT; e.step = step; e.vector = vector; e.vector_len = len; e.alpha = alpha;
    return e;
}

CODI_API codi_edit codi_edit_resid_add(int layer, int step, const float *vector, long len, float alpha) {
    codi_edit e = codi_edit_latent_add(step, vector, len, alpha);
    e.at = CODI_AT_RESID; e.layer = layer;
    return e;
}

CODI_API codi_steer *codi_steer_new(const codi_model *m) {
    codi_steer *st = (codi_steer *)CODI_MALLOC(sizeof *st);
    if (!st) return NULL;
    memset(st, 0, sizeof *st);
    st->n_layers = m->config.n_layers; st->dim = m->config.dim;
    st->n_kv_heads = m->config.n_kv_heads; st->head_dim = m->config.head_dim;
    return st;
}

CODI_API void codi_steer_free(codi_steer *st) {
    int i;
    if (!st) return;
    for (i = 0; i < st->n_edits; i++) {
        CODI_FREE((void *)st->edits[i].vector); CODI_FREE((void *)st->edits[i].key_vector);
        CODI_FREE((void *)st->edits[i].value_vector); CODI_FREE((void *)st->edits[i].positions);
    }
    CODI_FREE(st->edits);
    CODI_FREE(st);
}

/* A K/V vector of HD, KVH*HD or L*KVH*HD floats as an owned [L, KVH*HD]; NULL if the size fits none. */
static float *codi__kv_expand(const codi_steer *st, const float *v, long n) {
    long KVD = (long)st->n_kv_heads * st->head_dim, i, total = (long)st->n_layers * KVD;
    float *out;
    if (n != st->head_dim && n != KVD && n != total) return NULL;
    if (!(out = (float *)CODI_MALLOC((size_t)total * sizeof(float)))) return NULL;
    for (i = 0; i < total; i++) out[i] = v[i % n];
    return out;
}

static float *codi__copy_floats(const float *v, long n) {
    float *out = (float *)CODI_MALLOC((size_t)n * sizeof(float));
    if (out) memcpy(out, v, (size_t)n * sizeof(float));
    return out;
}

static const char *const codi__at_names[CODI_AT_COUNT] = { "latent_input", "resid", "final", "attn_out", "mlp_out", "key", "value", "kv_cache" };

CODI_API int codi_steer_add(codi_steer *st, const codi_edit *e, char *err, size_t errsz) {
    int i = st->n_edits, L = st->n_layers, kv = e->at == CODI_AT_KEY || e->at == CODI_AT_VALUE || e->at == CODI_AT_KV_CACHE;
    int max_layer = e->at == CODI_AT_RESID || e->at == CODI_AT_FINAL ? L : L - 1;
    long D = st->dim, KVD = (long)st->n_kv_heads * st->head_dim, rows_ok = e->at == CODI_AT_RESID ? L + 1 : L, j;
    codi_edit c = *e, nrm, *grown;
    const char *at;
    if (e->at < 0 || e->at >= CODI_AT_COUNT) { codi__err(err, errsz, "edit %d: \"at\": unknown point %d", i, e->at); return -1; }
    /* a step, or a latent input, implies the latent phase */
    if (c.phase == CODI_ALL && ((c.step != CODI_ALL && c.at != CODI_AT_KV_CACHE) || c.at == CODI_AT_LATENT_INPUT)) c.phase = CODI_PHASE_LATENT;
    nrm = c; e = &nrm;                              /* checked as normalised; c gets owned copies below */
    at = codi__at_names[e->at];
    if (e->op != CODI_EDIT_ADD && e->op != CODI_EDIT_SET) { codi__err(err, errsz, "edit %d: \"op\": must be add or set", i); return -1; }
    if (!(e->alpha - e->alpha == 0)) { codi__err(err, errsz, "edit %d: \"alpha\": not a finite number", i); return -1; }
    if (e->phase != CODI_ALL && (e->phase < CODI_PHASE_PREFILL || e->phase > CODI_PHASE_ANSWER)) {
        codi__err(err, errsz, "edit %d: \"phase\": unknown phase %d", i, e->phase); return -1;
    }
    if (e->step != CODI_ALL && e->step < 1) {
        codi__err(err, errsz, "edit %d: \"step\": latent steps count from 1 (got %d)", i, e->step); return -1;
    }
    if (e->step != CODI_ALL && e->phase != CODI_PHASE_LATENT) {
        codi__err(err, errsz, "edit %d: \"phase\": a \"step\" (%d) needs the latent phase (CODI_PHASE_LATENT or CODI_ALL; got phase %d)", i, e->step, e->phase); return -1;
    }
    if (e->at == CODI_AT_LATENT_INPUT && e->phase != CODI_PHASE_LATENT) {
        codi__err(err, errsz, "edit %d: \"phase\": latent_input edits belong to the latent phase (CODI_PHASE_LATENT or CODI_ALL; got %d)", i, e->phase); return -1;
    }
    if (e->layer != CODI_ALL && (e->layer < 0 || e->layer > max_layer || e->at == CODI_AT_LATENT_INPUT || (e->at == CODI_AT_FINAL && e->layer != L))) {
        codi__err(err, errsz, "edit %d: \"layer\": %d is out of range for at \"%s\" (%s%d)", i, e->layer, at,
                  e->at == CODI_AT_LATENT_INPUT ? "no layer; got " : e->at == CODI_AT_FINAL ? "only " : "0..", max_layer);
        return -1;
    }
    if (e->head != CODI_ALL && (!kv || e->head < 0 || e->head >= st->n_kv_heads)) {
        codi__err(err, errsz, "edit %d: \"head\": %d is out of range for at \"%s\" (kv heads 0..%d)", i, e->head, at, st->n_kv_heads - 1);
        return -1;
    }
    if (e->at == CODI_AT_KV_CACHE) {
        if (!e->key_vector && !e->value_vector) { codi__err(err, errsz, "edit %d: kv_cache needs \"key_vector\" and/or \"value_vector\"", i); return -1; }
        if ((e->when != CODI_ALL && e->when < 0) || (e->pos_latent < 0 && e->pos_latent != CODI_ALL && e->pos_latent != CODI_LAST) ||
            (e->pos_latent == 0 && e->n_positions <= 0)) {
            codi__err(err, errsz, "edit %d: \"when\"/\"positions\": a latent step k >= 0, or a non-empty position list", i); return -1;
        }
        for (j = 0; j < e->n_positions; j++)
            if (e->positions[j] < 0) { codi__err(err, errsz, "edit %d: \"positions\": %d is negative", i, e->positions[j]); return -1; }
        if ((e->key_vector && !codi__all_finite(e->key_vector, (int)e->kv_len)) || (e->value_vector && !codi__all_finite(e->value_vector, (int)e->kv_len))) {
            codi__err(err, errsz, "edit %d: \"key_vector\"/\"value_vector\": not finite (NaN or Inf)", i); return -1;
        }
    } else {
        if (!e->vector) { codi__err(err, errsz, "edit %d: \"vector\": missing (or give \"random\")", i); return -1; }
        if (!codi__all_finite(e->vector, (int)e->vector_len)) { codi__err(err, errsz, "edit %d: \"vector\": not finite (NaN or Inf)", i); return -1; }
    }
    if (kv) {
        long n = e->at == CODI_AT_KV_CACHE ? e->kv_len : e->vector_len;
        if (n != st->head_dim && n != KVD && n != L * KVD) {
            codi__err(err, errsz, "edit %d: \"%s\": %ld values; at \"%s\" needs [HD] = %d, [KVH, HD] = %ld or [L, KVH, HD] = %ld", i,
                      e->at == CODI_AT_KV_CACHE ? "key_vector" : "vector", n, at, st->head_dim, KVD, L * KVD);
            return -1;
        }
    } else if (e->vector_len != D && !(e->vector_len == rows_ok * D && (e->at == CODI_AT_RESID || e->at == CODI_AT_ATTN_OUT || e->at == CODI_AT_MLP_OUT))) {
        codi__err(err, errsz, "edit %d: \"vector\": %ld values; at \"%s\" needs [D] = %ld%s", i, e->vector_len, at, D,
                  e->at == CODI_AT_RESID ? " or [L+1, D]" : e->at == CODI_AT_ATTN_OUT || e->at == CODI_AT_MLP_OUT ? " or [L, D]" : "");
        return -1;
    }
    /* owned copies; K/V vectors expanded to [L, KVH*HD] */
    c.vector = c.key_vector = c.value_vector = NULL; c.positions = NULL;
    if (e->vector) c.vector = kv ? codi__kv_expand(st, e->vector, e->vector_len) : codi__copy_floats(e->vector, e->vector_len);
    if (e->key_vector) c.key_vector = codi__kv_expand(st, e->key_vector, e->kv_len);
    if (e->value_vector) c.value_vector = codi__kv_expand(st, e->value_vector, e->kv_len);
    if (e->n_positions > 0) {
        int *p = (int *)CODI_MALLOC((size_t)e->n_positions * sizeof(int));
        if (p) memcpy(p, e->positions, (size_t)e->n_positions * sizeof(int));
        c.positions = p;
    }
    if (kv) { c.vector_len = e->vector ? L * KVD : 0; c.kv_len = L * KVD; }
    grown = (codi_edit *)CODI_REALLOC(st->edits, (size_t)(i + 1) * sizeof *grown);
    if (grown) st->edits = grown;
    if (!grown || (e->vector && !c.vector) || (e->key_vector && !c.key_vector) || (e->value_vector && !c.value_vector) ||
        (e->n_positions > 0 && !c.positions)) {
        CODI_FREE((void *)c.vector); CODI_FREE((void *)c.key_vector); CODI_FREE((void *)c.value_vector); CODI_FREE((void *)c.positions);
        codi__err(err, errsz, "edit %d: out of memory", i); return -1;
    }
    st->edits[st->n_edits++] = c;
    return 0;
}

/* "FILE:TENSOR" (FILE relative to base_dir) as floats; *n values, the last dimension in *last. */
CODI_API float *codi_vector_read(const char *ref, const char *base_dir, long *n, long *last, char *err, size_t errsz) {
    const char *colon = strrchr(ref, ':'), *name;
    char path[4096];
    codi_safetensors_file *f;
    codi_safetensors_tensor t;
    float *out = NULL;
    if (!colon || colon == ref || !colon[1]) { codi__err(err, errsz, "\"%s\" is not FILE.safetensors:TENSOR", ref); return NULL; }
    name = colon + 1;
    if (ref[0] == '/' || !base_dir || !*base_dir) snprintf(path, sizeof path, "%.*s", (int)(colon - ref), ref);
    else snprintf(path, sizeof path, "%s/%.*s", base_dir, (int)(colon - ref), ref);
    if (!(f = codi_safetensors_open(path, err, errsz))) return NULL;
    if (codi_safetensors_find(f, name, &t)) codi__err(err, errsz, "%s has no tensor \"%s\"", path, name);
    else if (t.numel == 0 || !(out = (float *)CODI_MALLOC(t.numel * sizeof(float)))) codi__err(err, errsz, "%s: tensor \"%s\" is empty or does not fit in memory", path, name);
    else if (codi_safetensors_read_f32(f, name, out, t.numel, err, errsz) < 0) { CODI_FREE(out); out = NULL; }
    else { *n = (long)t.numel; *last = t.ndim ? (long)t.shape[t.ndim - 1] : 1; }
    codi_safetensors_close(f);
    return out;
}

/* Mean and (population) standard deviation of x[0], x[stride], ... (n values). */
static void codi__mean_sd(const float *x, long n, long stride, double *mean, double *sd) {
    double s1 = 0, s2 = 0;
    long i;
    for (i = 0; i < n; i++) s1 += x[i * stride];
    *mean = s1 / n;
    for (i = 0; i < n; i++) s2 += (x[i * stride] - *mean) * (x[i * stride] - *mean);
    *sd = sqrt(s2 / n);
}

/* A "random" object -> an owned vector of *n floats (size: n_default for "norm"). */
static float *codi__steer_random(const codi_json *r, uint64_t seed_add, long n_default, const char *base_dir, long *n,
                                 int *self, char *err, size_t errsz) {
    const codi_json *seed = codi_json_get(r, "seed"), *norm = codi_json_get(r, "norm");
    const codi_json *norm_of = codi_json_get(r, "norm_of"), *ms = codi_json_get(r, "mean_std_of"), *pd = codi_json_get(r, "per_dim"), *f;
    codi_rng rng;
    float *src = NULL, *out = NULL;
    long ns = 0, last = 0, i, j;
    if (r->type != CODI_JSON_OBJ) { codi__err(err, errsz, "\"random\": must be an object"); return NULL; }
    for (f = r->child; f; f = f->next)
        if (strcmp(f->key, "seed") && strcmp(f->key, "norm") && strcmp(f->key, "norm_of") && strcmp(f->key, "mean_std_of") && strcmp(f->key, "per_dim")) {
            codi__err(err, errsz, "\"random\": unknown field \"%s\"", f->key); return NULL;
        }
    if (!seed || seed->type != CODI_JSON_NUM || seed->num < 0 || seed->num > 9007199254740992.0 || seed->num != floor(seed->num)) {
        codi__err(err, errsz, "\"random\": \"seed\" must be a whole number >= 0"); return NULL;
    }
    if ((norm != NULL) + (norm_of != NULL) + (ms != NULL) != 1) {
        codi__err(err, errsz, "\"random\": give exactly one of \"norm\", \"norm_of\", \"mean_std_of\""); return NULL;
    }
    if (pd && (!ms || (pd->type != CODI_JSON_TRUE && pd->type != CODI_JSON_FALSE))) {
        codi__err(err, errsz, "\"random\": \"per_dim\" is true/false beside \"mean_std_of\""); return NULL;
    }
    codi_rng_seed(&rng, (uint64_t)seed->num + seed_add);
    *self = ms && ms->type == CODI_JSON_STR && !strcmp(ms->str, "self");
    if (*self && pd) { codi__err(err, errsz, "\"random\": \"per_dim\" does not go with \"mean_std_of\": \"self\""); return NULL; }
    if (norm || *self) {
        if (norm && (norm->type != CODI_JSON_NUM || !(norm->num >= 0) || norm->num > 1e30)) { codi__err(err, errsz, "\"random\": \"norm\" must be a number >= 0"); return NULL; }
        if ((out = (float *)CODI_MALLOC((size_t)n_default * sizeof(float))) != NULL) {
            if (norm) codi_rng_direction(&rng, out, n_default, norm->num);
            else for (i = 0; i < n_default; i++) out[i] = (float)codi_rng_normal(&rng);
        }
        *n = n_default;
        if (!out) codi__err(err, errsz, "out of memory");
        return out;
    }
    f = norm_of ? norm_of : ms;
    if (f->type != CODI_JSON_STR) { codi__err(err, errsz, "\"random\": \"%s\" must be \"FILE:TENSOR\"", f->key); return NULL; }
    if (!(src = codi_vector_read(f->str, base_dir, &ns, &last, err, errsz))) return NULL;
    if (!codi__all_finite(src, (int)ns)) { codi__err(err, errsz, "\"random\": %s is not finite (NaN or Inf)", f->str); CODI_FREE(src); return NULL; }
    *n = pd && pd->type == CODI_JSON_TRUE ? last : ns;
    if (*n == ns && pd && pd->type == CODI_JSON_TRUE) { codi__err(err, errsz, "\"random\": \"per_dim\" needs a tensor of rows (samples)"); CODI_FREE(src); return NULL; }
    if ((out = (float *)CODI_MALLOC((size_t)*n * sizeof(float))) == NULL) { codi__err(err, errsz, "out of memory"); CODI_FREE(src); return NULL; }
    if (norm_of) codi_rng_direction(&rng, out, ns, codi_l2_norm(src, ns));
    else if (*n == ns) {                                 /* the tensor's scalar mean and std */
        double mean, sd;
        codi__mean_sd(src, ns, 1, &mean, &sd);
        for (i = 0; i < ns; i++) out[i] = (float)(mean + sd * codi_rng_normal(&rng));
    } else                                               /* each column's, over the rows */
        for (j = 0; j < *n; j++) {
            double mean, sd;
            codi__mean_sd(src + j, ns / *n, *n, &mean, &sd);
            out[j] = (float)(mean + sd * codi_rng_normal(&rng));
        }
    CODI_FREE(src);
    return out;
}

/* "all" or a whole number in [lo, hi] into *out; 0, or -1 with the reason in err. */
static int codi__spec_int_or_all(const codi_json *v, int lo, int hi, int *out, char *err, size_t errsz) {
    if (v->type == CODI_JSON_STR && !strcmp(v->str, "all")) { *out = CODI_ALL; return 0; }
    if (v->type != CODI_JSON_NUM || v->num != floor(v->num) || v->num < lo || v->num > hi) {
        codi__err(err, errsz, "must be \"all\" or a whole number in %d..%d", lo, hi); return -1;
    }
    *out = (int)v->num;
    return 0;
}

/* "latent:K" / "after_latent:K" -> K >= 1, else -1. */
static int codi__spec_latent_k(const char *s, const char *prefix) {
    size_t n = strlen(prefix);
    char *end;
    long k;
    if (strncmp(s, prefix, n) || !s[n]) return -1;
    k = strtol(s + n, &end, 10);
    return *end || k < 1 || k > 1000000 ? -1 : (int)k;
}

/* A TransformerLens hook name as "at" (HookedTransformer's names on a Llama): 1 with *at and *layer
   when it has an equivalent here, 0 when name is not TransformerLens-style, -1 with why when it has
   none. */
static int codi__steer_tl_name(const char *name, int n_layers, int *at, int *layer, char *why, size_t whysz) {
    static const struct { const char *hook; int at, next; } map[] = {
        { "hook_resid_pre", CODI_AT_RESID, 0 }, { "hook_resid_post", CODI_AT_RESID, 1 }, { "hook_attn_out", CODI_AT_ATTN_OUT, 0 },
        { "hook_mlp_out", CODI_AT_MLP_OUT, 0 }, { "attn.hook_rot_k", CODI_AT_KEY, 0 }, { "attn.hook_v", CODI_AT_VALUE, 0 } };
    static const char accepted[] = "the TransformerLens names with an equivalent here are blocks.L.hook_resid_pre, "
                                   "blocks.L.hook_resid_post, blocks.L.hook_attn_out, blocks.L.hook_mlp_out, "
                                   "blocks.L.attn.hook_rot_k, blocks.L.attn.hook_v";
    const char *p = name + 7;
    char *end;
    long l;
    size_t i;
    if (!strcmp(name, "hook_embed")) {
        codi__err(why, whysz, "\"hook_embed\": token embeddings cannot be edited by a spec; the latent inputs z_k are \"latent_input\""); return -1;
    }
    if (!strcmp(name, "ln_final.hook_normalized")) {
        codi__err(why, whysz, "\"%s\" is x / rms before the norm's weight; ours is after it: \"final\" (HF's model.norm output)", name); return -1;
    }
    if (strncmp(name, "blocks.", 7)) {
        if (strncmp(name, "hook_", 5) && strncmp(name, "ln_final.", 9) && strncmp(name, "unembed.", 8)) return 0;
        codi__err(why, whysz, "\"%s\" has no equivalent here; %s", name, accepted); return -1;
    }
    l = strtol(p, &end, 10);
    if (!(*p >= '0' && *p <= '9') || *end != '.') { codi__err(why, whysz, "\"%s\": blocks.L.NAME with a layer index L", name); return -1; }
    if (l >= n_layers) { codi__err(why, whysz, "\"%s\": layer %ld is out of range 0..%d", name, l, n_layers - 1); return -1; }
    for (i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(end + 1, map[i].hook)) { *at = map[i].at; *layer = (int)l + map[i].next; return 1; }
    if (!strcmp(end + 1, "attn.hook_k")) {
        codi__err(why, whysz, "\"%s\": keys before RoPE are not a hook point here; blocks.%ld.attn.hook_rot_k (after RoPE, as cached) is", name, l);
        return -1;
    }
    codi__err(why, whysz, "\"%s\" has no equivalent here; %s", name, accepted);
    return -1;
}

/* One element of "edits" -> codi_steer_add. */
static int codi__steer_parse_edit(codi_steer *st, const codi_json *j, int index, const char *base_dir, char *err, size_t errsz) {
    /* which fields each "at" takes: bit per CODI_AT_* */
    static const struct { const char *name; unsigned ats; } fields[] = {
        { "at", 0xff }, { "op", 0xff }, { "alpha", 0xff }, { "step", 0xff }, { "random", 0xff },
        { "phase", 0x7e }, { "vector", 0x7f }, { "layer", 0xfe }, { "head", 0xe0 },
        { "positions", 0x80 }, { "when", 0x80 }, { "key_vector", 0x80 }, { "value_vector", 0x80 } };
    codi_edit e = codi_edit_default();
    const codi_json *f, *at = codi_json_get(j, "at");
    float *vec[3] = { NULL, NULL, NULL };
    long lens[3] = { 0, 0, 0 };
    int *pos = NULL, rc = -1, a, k, has_phase = 0, tl = 0, tl_layer = 0;
    size_t fi;
    char sub[200], why[400];
    sub[0] = 0;
    if (j->type != CODI_JSON_OBJ) { codi__err(err, errsz, "edit %d: not a JSON object", index); return -1; }
    if (!at || at->type != CODI_JSON_STR) { codi__err(err, errsz, "edit %d: \"at\": missing (latent_input, resid, final, attn_out, mlp_out, key, value, kv_cache)", index); return -1; }
    for (a = 0; a < CODI_AT_COUNT && strcmp(at->str, codi__at_names[a]); a++) {}
    if (a == CODI_AT_COUNT && (tl = codi__steer_tl_name(at->str, st->n_layers, &a, &tl_layer, why, sizeof why)) < 0) {
        codi__err(err, errsz, "edit %d: \"at\": %s", index, why); return -1;
    }
    if (a == CODI_AT_COUNT) { codi__err(err, errsz, "edit %d: \"at\": unknown point \"%s\" (latent_input, resid, final, attn_out, mlp_out, key, value, kv_cache, or a TransformerLens name such as blocks.8.hook_resid_pre)", index, at->str); return -1; }
    e.at = a;
    if (a == CODI_AT_LATENT_INPUT) e.phase = CODI_PHASE_LATENT;
    if (a == CODI_AT_FINAL) e.layer = st->n_layers;
    for (f = j->child; f; f = f->next) {
        for (fi = 0; fi < sizeof fields / sizeof *fields && strcmp(f->key, fields[fi].name); fi++) {}
        if (fi == sizeof fields / sizeof *fields) { codi__err(err, errsz, "edit %d: \"%s\": unknown field", index, f->key); goto done; }
        if (!(fields[fi].ats >> a & 1)) { codi__err(err, errsz, "edit %d: \"%s\": does not apply to at \"%s\"", index, f->key, at->str); goto done; }
    }
#define CODI__FIELD_ERR(name, ...) do { snprintf(why, sizeof why, __VA_ARGS__); codi__err(err, errsz, "edit %d: \"%s\": %s", index, name, why); goto done; } while (0)
    if ((f = codi_json_get(j, "op")) != NULL) {
        if (f->type != CODI_JSON_STR || (strcmp(f->str, "add") && strcmp(f->str, "set"))) CODI__FIELD_ERR("op", "must be \"add\" or \"set\"");
        e.op = strcmp(f->str, "add") ? CODI_EDIT_SET : CODI_EDIT_ADD;
    }
    if ((f = codi_json_get(j, "alpha")) != NULL) {
        if (f->type != CODI_JSON_NUM || !(fabs(f->num) <= 1e30)) CODI__FIELD_ERR("alpha", "must be a finite number");
        e.alpha = (float)f->num;
    }
    if ((f = codi_json_get(j, "phase")) != NULL) {
        static const char *const names[] = { "prefill", "latent", "answer" };
        if (f->type == CODI_JSON_STR && !strcmp(f->str, "all")) e.phase = CODI_ALL;
        else {
            for (k = 0; k < 3 && !(f->type == CODI_JSON_STR && !strcmp(f->str, names[k])); k++) {}
            if (k == 3) CODI__FIELD_ERR("phase", "must be \"prefill\", \"latent\", \"answer\" or \"all\"");
            e.phase = k;
        }
        if (a == CODI_AT_LATENT_INPUT && e.phase != CODI_PHASE_LATENT) CODI__FIELD_ERR("phase", "latent_input edits belong to the latent phase");
        has_phase = 1;
    }
    if ((f = codi_json_get(j, "step")) != NULL) {
        if (codi__spec_int_or_all(f, 1, 1000000, &k, sub, sizeof sub)) CODI__FIELD_ERR("step", "%s", sub);
        if (a == CODI_AT_KV_CACHE) e.when = e.pos_latent = k;
        else {
            if (k != CODI_ALL && has_phase && e.phase != CODI_PHASE_LATENT) CODI__FIELD_ERR("step", "latent steps need phase \"latent\"");
            e.step = k;
            if (k != CODI_ALL) e.phase = CODI_PHASE_LATENT;
        }
    }
    if ((f = codi_json_get(j, "layer")) != NULL) {
        int hi = a == CODI_AT_RESID || a == CODI_AT_FINAL ? st->n_layers : st->n_layers - 1;
        if (tl) CODI__FIELD_ERR("layer", "given twice: the TransformerLens name \"%s\" holds the layer", at->str);
        if (codi__spec_int_or_all(f, a == CODI_AT_FINAL ? st->n_layers : 0, hi, &e.layer, sub, sizeof sub)) CODI__FIELD_ERR("layer", "%s (at \"%s\")", sub, at->str);
    } else if (tl) e.layer = tl_layer;
    else if (a != CODI_AT_LATENT_INPUT && a != CODI_AT_FINAL && a != CODI_AT_KV_CACHE) CODI__FIELD_ERR("layer", "missing (a layer index or \"all\")");
    if ((f = codi_json_get(j, "head")) != NULL && codi__spec_int_or_all(f, 0, st->n_kv_heads - 1, &e.head, sub, sizeof sub)) CODI__FIELD_ERR("head", "%s", sub);
    if ((f = codi_json_get(j, "when")) != NULL) {
        if (f->type == CODI_JSON_STR && !strcmp(f->str, "after_latents")) e.when = CODI_ALL;
        else if (f->type == CODI_JSON_STR && !strcmp(f->str, "after_prefill")) e.when = 0;
        else if (f->type != CODI_JSON_STR || (e.when = codi__spec_latent_k(f->str, "after_latent:")) < 0)
            CODI__FIELD_ERR("when", "must be \"after_latents\", \"after_latent:K\" (K >= 1) or \"after_prefill\"");
    }
    if ((f = codi_json_get(j, "positions")) != NULL) {
        const codi_json *p;
        if (f->type == CODI_JSON_STR && !strcmp(f->str, "latents")) e.pos_latent = CODI_ALL;
        else if (f->type == CODI_JSON_STR && !strcmp(f->str, "last")) e.pos_latent = CODI_LAST;
        else if (f->type == CODI_JSON_STR) {
            if ((e.pos_latent = codi__spec_latent_k(f->str, "latent:")) < 0) CODI__FIELD_ERR("positions", "must be \"latents\", \"latent:K\" (K >= 1), \"last\" or a list of positions");
        } else if (f->type == CODI_JSON_ARR && f->count > 0) {
            if (!(pos = (int *)CODI_MALLOC((size_t)f->count * sizeof(int)))) CODI__FIELD_ERR("positions", "out of memory");
            for (p = f->child, k = 0; p; p = p->next, k++) {
                if (p->type != CODI_JSON_NUM || p->num != floor(p->num) || p->num < 0 || p->num > 1e9) CODI__FIELD_ERR("positions", "element %d is not a position >= 0", k);
                pos[k] = (int)p->num;
            }
            e.pos_latent = 0; e.positions = pos; e.n_positions = f->count;
        } else CODI__FIELD_ERR("positions", "must be \"latents\", \"latent:K\" or a non-empty list of positions");
    }
    /* the vectors: from files, or drawn */
    {
        static const char *const names[3] = { "vector", "key_vector", "value_vector" };
        const codi_json *r = codi_json_get(j, "random");
        int kv = a == CODI_AT_KEY || a == CODI_AT_VALUE || a == CODI_AT_KV_CACHE;
        for (k = 0; k < 3; k++) {
            long last = 0;
            if (!(f = codi_json_get(j, names[k]))) continue;
            if (r) CODI__FIELD_ERR(names[k], "give either a vector or \"random\", not both");
            if (f->type != CODI_JSON_STR) CODI__FIELD_ERR(names[k], "must be \"FILE.safetensors:TENSOR\"");
            if (!(vec[k] = codi_vector_read(f->str, base_dir, &lens[k], &last, sub, sizeof sub))) CODI__FIELD_ERR(names[k], "%s", sub);
            if (last != (kv ? st->head_dim : st->dim)) CODI__FIELD_ERR(names[k], "last dimension %ld; at \"%s\" needs %d", last, at->str, kv ? st->head_dim : st->dim);
        }
        if (r) {
            for (k = a == CODI_AT_KV_CACHE ? 1 : 0; k < (a == CODI_AT_KV_CACHE ? 3 : 1); k++)
                if (!(vec[k] = codi__steer_random(r, (uint64_t)(k == 2), kv ? st->head_dim : st->dim, base_dir, &lens[k], &e.noise_self, sub, sizeof sub)))
                    CODI__FIELD_ERR("random", "%s", sub);
            if (kv && e.noise_self) CODI__FIELD_ERR("random", "\"mean_std_of\": \"self\" applies to latent_input, resid, final, attn_out, mlp_out");
        }
        if (vec[1] && vec[2] && lens[1] != lens[2]) CODI__FIELD_ERR("value_vector", "%ld values, key_vector has %ld", lens[2], lens[1]);
        e.vector = vec[0]; e.vector_len = lens[0];
        e.key_vector = vec[1]; e.value_vector = vec[2]; e.kv_len = vec[1] ? lens[1] : lens[2];
    }
#undef CODI__FIELD_ERR
    if (st->n_edits != index) { codi__err(err, errsz, "edit %d: internal order", index); goto done; }
    rc = codi_steer_add(st, &e, err, errsz);
done:
    for (k = 0; k < 3; k++) CODI_FREE(vec[k]);
    CODI_FREE(pos);
    return rc;
}

CODI_API codi_steer *codi_steer_parse(const codi_model *m, const char *json, size_t len, const char *base_dir,
                                      char *err, size_t errsz) {
    char jerr[256];
    codi_json *root = codi_json_parse_strict(json, len, jerr, sizeof jerr);
    const codi_json *edits, *f;
    codi_steer *st = NULL;
    int i = 0;
    if (!root) { codi__err(err, errsz, "steer spec: %s", jerr); return NULL; }
    if (root->type != CODI_JSON_OBJ) { codi__err(err, errsz, "steer spec: not a JSON object {\"edits\": [...]}"); goto fail; }
    for (f = root->child; f; f = f->next)
        if (strcmp(f->key, "edits") && strcmp(f->key, "name") && strcmp(f->key, "description")) {
            codi__err(err, errsz, "steer spec: unknown field \"%s\" (edits, name, description)", f->key); goto fail;
        }
    if (!(edits = codi_json_get(root, "edits")) || edits->type != CODI_JSON_ARR) { codi__err(err, errsz, "steer spec: \"edits\" must be a list"); goto fail; }
    if (!(st = codi_steer_new(m))) { codi__err(err, errsz, "out of memory"); goto fail; }
    if ((f = codi_json_get(root, "name")) != NULL && f->type == CODI_JSON_STR) snprintf(st->name, sizeof st->name, "%s", f->str);
    for (f = edits->child; f; f = f->next, i++)
        if (codi__steer_parse_edit(st, f, i, base_dir, err, errsz)) goto fail;
    codi_json_free(root);
    return st;
fail:
    codi_steer_free(st);
    codi_json_free(root);
    return NULL;
}

CODI_API codi_steer *codi_steer_load(const codi_model *m, const char *path, char *err, size_t errsz) {
    size_t len;
    char *text = codi_read_text(path, &len), dir[4096], e2[512];
    const char *slash = strrchr(path, '/');
    codi_steer *st;
    if (!text) { codi__err(err, errsz, "%s: cannot read", path); return NULL; }
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 0, path);
    st = codi_steer_parse(m, text, len, slash ? dir : NULL, e2, sizeof e2);
    CODI_FREE(text);
    if (!st) { codi__err(err, errsz, "%s: %s", path, e2); return NULL; }
    if (!st->name[0]) {
        const char *base = slash ? slash + 1 : path, *dot = strrchr(base, '.');
        snprintf(st->name, sizeof st->name, "%.*s", dot ? (int)(dot - base) : (int)strlen(base), base);
    }
    return st;
}

CODI_API codi_steer *codi_steer_random_like(const codi_steer *st, uint64_t seed) {
    codi_steer *r = (codi_steer *)CODI_MALLOC(sizeof *r);
    codi_rng rng;
    int i, k;
    if (!r) return NULL;
    *r = *st;
    r->n_edits = 0;
    if (!(r->edits = (codi_edit *)CODI_MALLOC((size_t)(st->n_edits ? st->n_edits : 1) * sizeof *r->edits))) { CODI_FREE(r); return NULL; }
    snprintf(r->name, sizeof r->name, "random(%.80s, seed %llu)", st->name, (unsigned long long)seed);
    codi_rng_seed(&rng, seed);
    for (i = 0; i < st->n_edits; i++) {
        const codi_edit *e = &st->edits[i];
        codi_edit c = *e;
        const float *src[3] = { e->vector, e->key_vector, e->value_vector };
        float *dst[3] = { NULL, NULL, NULL };
        long len[3] = { e->vector_len, e->kv_len, e->kv_len };
        int bad = 0;
        long row = e->at == CODI_AT_KEY || e->at == CODI_AT_VALUE || e->at == CODI_AT_KV_CACHE ? st->head_dim : st->dim, o;
        for (k = 0; k < 3; k++) {
            if (!src[k]) continue;
            if (!(dst[k] = (float *)CODI_MALLOC((size_t)len[k] * sizeof(float)))) { bad = 1; continue; }
            for (o = 0; o < len[k]; o += row) codi_rng_direction(&rng, dst[k] + o, row, codi_l2_norm(src[k] + o, row));
        }
        c.positions = NULL;
        if (e->n_positions > 0 && (c.positions = (int *)CODI_MALLOC((size_t)e->n_positions * sizeof(int))) != NULL)
            memcpy((int *)c.positions, e->positions, (size_t)e->n_positions * sizeof(int));
        c.vector = dst[0]; c.key_vector = dst[1]; c.value_vector = dst[2];
        r->edits[r->n_edits++] = c;
        if (bad || (e->n_positions > 0 && !c.positions)) { codi_steer_free(r); return NULL; }
    }
    return r;
}

CODI_API int codi_steer_install(const codi_steer *st, codi_state *s, codi_run_opts *o) {
    int i, kv = 0, hooks = 0;
    if (st->dim != s->dim || st->n_layers != s->n_layers || st->n_kv_heads != s->n_kv_heads || st->head_dim != s->head_dim) {
        codi__err(s->error, sizeof s->error, "steer: the intervention set was built for another model shape"); return -1;
    }
    for (i = 0; i < st->n_edits; i++) {
        const codi_edit *e = &st->edits[i];
        int k = e->at == CODI_AT_KV_CACHE ? (e->when > e->pos_latent ? e->when : e->pos_latent) : e->step;
        if (e->at == CODI_AT_KV_CACHE) kv = 1; else hooks = 1;
        if (o && k > o->n_latent) {
            codi__err(s->error, sizeof s->error, "steer edit %d: latent step %d but the run has %d latent steps", i, k, o->n_latent); return -1;
        }
    }
    if (kv && !o) { codi__err(s->error, sizeof s->error, "steer: kv_cache edits need the run options (after_latent)"); return -1; }
    if (kv && o->after_latent && (o->after_latent != codi_steer_after_latent || o->after_latent_user != (const void *)st)) {
        codi__err(s->error, sizeof s->error, "steer: the run options already have another after_latent callback"); return -1;
    }
    if (hooks && codi_state_add_hook(s, codi__steer_hook, (void *)st) < 0) {
        codi__err(s->error, sizeof s->error, "steer: the state's %d hooks are all in use", CODI_MAX_HOOKS); return -1;
    }
    if (kv) { o->after_latent = codi_steer_after_latent; o->after_latent_user = (void *)st; }
    return 0;
}

CODI_API int codi_means_init(codi_means *a, const codi_model *m, int n_latent) {
    const codi_config *c = &m->config;
    memset(a, 0, sizeof *a);
    if (n_latent < 1) return -1;
    a->n_latent = n_latent; a->dim = c->dim; a->kv_size = c->n_layers * c->n_kv_heads * c->head_dim;
    a->final = (double *)CODI_MALLOC((size_t)n_latent * a->dim * sizeof(double));
    a->key = (double *)CODI_MALLOC((size_t)n_latent * a->kv_size * sizeof(double));
    a->value = (double *)CODI_MALLOC((size_t)n_latent * a->kv_size * sizeof(double));
    if (!a->final || !a->key || !a->value) { codi_means_free(a); return -1; }
    memset(a->final, 0, (size_t)n_latent * a->dim * sizeof(double));
    memset(a->key, 0, (size_t)n_latent * a->kv_size * sizeof(double));
    memset(a->value, 0, (size_t)n_latent * a->kv_size * sizeof(double));
    return 0;
}

CODI_API int codi_means_add(codi_means *a, const codi_model *m, codi_state *s, int prompt_len) {
    const codi_config *c = &m->config;
    float *h;
    int k, l, kh, j;
    if (prompt_len < 1 || prompt_len + a->n_latent - 1 > s->n_pos - 1) {
        codi__err(s->error, sizeof s->error, "means: the state holds %d positions, not a prompt of %d and %d latents", s->n_pos, prompt_len, a->n_latent);
        return -1;
    }
    if (!(h = (float *)CODI_MALLOC((size_t)c->dim * sizeof(float)))) { codi__err(s->error, sizeof s->error, "out of memory"); return -1; }
    for (k = 1; k <= a->n_latent; k++) {
        int p = prompt_len + k - 1;                 /* latent k's slot */
        double *fk = a->final + (size_t)(k - 1) * a->dim;
        codi_rmsnorm(h, codi_state_resid(s, c->n_layers, p), m->w.final_norm, c->dim, c->norm_eps);
        for (j = 0; j < c->dim; j++) fk[j] += h[j];
        for (l = 0; l < c->n_layers; l++)
            for (kh = 0; kh < c->n_kv_heads; kh++) {
                size_t off = (size_t)(k - 1) * a->kv_size + ((size_t)l * c->n_kv_heads + kh) * c->head_dim;
                const float *kk = codi_state_key(s, l, kh, p), *vv = codi_state_value(s, l, kh, p);
                for (j = 0; j < c->head_dim; j++) { a->key[off + j] += kk[j]; a->value[off + j] += vv[j]; }
            }
    }
    CODI_FREE(h);
    a->count++;
    return 0;
}

CODI_API void codi_means_get(const codi_means *a, float *final, float *key, float *value) {
    size_t i, nf = (size_t)a->n_latent * a->dim, nk = (size_t)a->n_latent * a->kv_size;
    double d = a->count ? (double)a->count : 1;
    for (i = 0; final && i < nf; i++) final[i] = (float)(a->final[i] / d);
    for (i = 0; key && i < nk; i++) key[i] = (float)(a->key[i] / d);
    for (i = 0; value && i < nk; i++) value[i] = (float)(a->value[i] / d);
}

CODI_API void codi_means_free(codi_means *a) {
    CODI_FREE(a->final); CODI_FREE(a->key); CODI_FREE(a->value);
    memset(a, 0, sizeof *a);
}

/* >>unicode: the character classes of the pre-tokenizer regex --------------------------------- */

/* BEGIN generated by tools/gen_unicode.py from the Unicode Character Database
   (Unicode 16.0.0); do not edit by hand. */
/* \p{L}: general category Lu Ll Lt Lm Lo: 677 ranges [first, last] */
static const uint32_t codi__uni_letter[][2] = {
    {0x41,0x5A}, {0x61,0x7A}, {0xAA,0xAA}, {0xB5,0xB5}, {0xBA,0xBA}, {0xC0,0xD6}, {0xD8,0xF6},
    {0xF8,0x2C1}, {0x2C6,0x2D1}, {0x2E0,0x2E4}, {0x2EC,0x2EC}, {0x2EE,0x2EE}, {0x370,0x374},
    {0x376,0x377}, {0x37A,0x37D}, {0x37F,0x37F}, {0x386,0x386}, {0x388,0x38A}, {0x38C,0x38C},
    {0x38E,0x3A1}, {0x3A3,0x3F5}, {0x3F7,0x481}, {0x48A,0x52F}, {0x531,0x556}, {0x559,0x559},
    {0x560,0x588}, {0x5D0,0x5EA}, {0x5EF,0x5F2}, {0x620,0x64A}, {0x66E,0x66F}, {0x671,0x6D3},
    {0x6D5,0x6D5}, {0x6E5,0x6E6}, {0x6EE,0x6EF}, {0x6FA,0x6FC}, {0x6FF,0x6FF}, {0x710,0x710},
    {0x712,0x72F}, {0x74D,0x7A5}, {0x7B1,0x7B1}, {0x7CA,0x7EA}, {0x7F4,0x7F5}, {0x7FA,0x7FA},
    {0x800,0x815}, {0x81A,0x81A}, {0x824,0x824}, {0x828,0x828}, {0x840,0x858}, {0x860,0x86A},
    {0x870,0x887}, {0x889,0x88E}, {0x8A0,0x8C9}, {0x904,0x939}, {0x93D,0x93D}, {0x950,0x950},
    {0x958,0x961}, {0x971,0x980}, {0x985,0x98C}, {0x98F,0x990}, {0x993,0x9A8}, {0x9AA,0x9B0},
    {0x9B2,0x9B2}, {0x9B6,0x9B9}, {0x9BD,0x9BD}, {0x9CE,0x9CE}, {0x9DC,0x9DD}, {0x9DF,0x9E1},
    {0x9F0,0x9F1}, {0x9FC,0x9FC}, {0xA05,0xA0A}, {0xA0F,0xA10}, {0xA13,0xA28}, {0xA2A,0xA30},
    {0xA32,0xA33}, {0xA35,0xA36}, {0xA38,0xA39}, {0xA59,0xA5C}, {0xA5E,0xA5E}, {0xA72,0xA74},
    {0xA85,0xA8D}, {0xA8F,0xA91}, {0xA93,0xAA8}, {0xAAA,0xAB0}, {0xAB2,0xAB3}, {0xAB5,0xAB9},
    {0xABD,0xABD}, {0xAD0,0xAD0}, {0xAE0,0xAE1}, {0xAF9,0xAF9}, {0xB05,0xB0C}, {0xB0F,0xB10},
    {0xB13,0xB28}, {0xB2A,0xB30}, {0xB32,0xB33}, {0xB35,0xB39}, {0xB3D,0xB3D}, {0xB5C,0xB5D},
    {0xB5F,0xB61}, {0xB71,0xB71}, {0xB83,0xB83}, {0xB85,0xB8A}, {0xB8E,0xB90}, {0xB92,0xB95},
    {0xB99,0xB9A}, {0xB9C,0xB9C}, {0xB9E,0xB9F}, {0xBA3,0xBA4}, {0xBA8,0xBAA}, {0xBAE,0xBB9},
    {0xBD0,0xBD0}, {0xC05,0xC0C}, {0xC0E,0xC10}, {0xC12,0xC28}, {0xC2A,0xC39}, {0xC3D,0xC3D},
    {0xC58,0xC5A}, {0xC5D,0xC5D}, {0xC60,0xC61}, {0xC80,0xC80}, {0xC85,0xC8C}, {0xC8E,0xC90},
    {0xC92,0xCA8}, {0xCAA,0xCB3}, {0xCB5,0xCB9}, {0xCBD,0xCBD}, {0xCDD,0xCDE}, {0xCE0,0xCE1},
    {0xCF1,0xCF2}, {0xD04,0xD0C}, {0xD0E,0xD10}, {0xD12,0xD3A}, {0xD3D,0xD3D}, {0xD4E,0xD4E},
    {0xD54,0xD56}, {0xD5F,0xD61}, {0xD7A,0xD7F}, {0xD85,0xD96}, {0xD9A,0xDB1}, {0xDB3,0xDBB},
    {0xDBD,0xDBD}, {0xDC0,0xDC6}, {0xE01,0xE30}, {0xE32,0xE33}, {0xE40,0xE46}, {0xE81,0xE82},
    {0xE84,0xE84}, {0xE86,0xE8A}, {0xE8C,0xEA3}, {0xEA5,0xEA5}, {0xEA7,0xEB0}, {0xEB2,0xEB3},
    {0xEBD,0xEBD}, {0xEC0,0xEC4}, {0xEC6,0xEC6}, {0xEDC,0xEDF}, {0xF00,0xF00}, {0xF40,0xF47},
    {0xF49,0xF6C}, {0xF88,0xF8C}, {0x1000,0x102A}, {0x103F,0x103F}, {0x1050,0x1055},
    {0x105A,0x105D}, {0x1061,0x1061}, {0x1065,0x1066}, {0x106E,0x1070}, {0x1075,0x1081},
    {0x108E,0x108E}, {0x10A0,0x10C5}, {0x10C7,0x10C7}, {0x10CD,0x10CD}, {0x10D0,0x10FA},
    {0x10FC,0x1248}, {0x124A,0x124D}, {0x1250,0x1256}, {0x1258,0x1258}, {0x125A,0x125D},
    {0x1260,0x1288}, {0x128A,0x128D}, {0x1290,0x12B0}, {0x12B2,0x12B5}, {0x12B8,0x12BE},
    {0x12C0,0x12C0}, {0x12C2,0x12C5}, {0x12C8,0x12D6}, {0x12D8,0x1310}, {0x1312,0x1315},
    {0x1318,0x135A}, {0x1380,0x138F}, {0x13A0,0x13F5}, {0x13F8,0x13FD}, {0x1401,0x166C},
    {0x166F,0x167F}, {0x1681,0x169A}, {0x16A0,0x16EA}, {0x16F1,0x16F8}, {0x1700,0x1711},
    {0x171F,0x1731}, {0x1740,0x1751}, {0x1760,0x176C}, {0x176E,0x1770}, {0x1780,0x17B3},
    {0x17D7,0x17D7}, {0x17DC,0x17DC}, {0x1820,0x1878}, {0x1880,0x1884}, {0x1887,0x18A8},
    {0x18AA,0x18AA}, {0x18B0,0x18F5}, {0x1900,0x191E}, {0x1950,0x196D}, {0x1970,0x1974},
    {0x1980,0x19AB}, {0x19B0,0x19C9}, {0x1A00,0x1A16}, {0x1A20,0x1A54}, {0x1AA7,0x1AA7},
    {0x1B05,0x1B33}, {0x1B45,0x1B4C}, {0x1B83,0x1BA0}, {0x1BAE,0x1BAF}, {0x1BBA,0x1BE5},
    {0x1C00,0x1C23}, {0x1C4D,0x1C4F}, {0x1C5A,0x1C7D}, {0x1C80,0x1C8A}, {0x1C90,0x1CBA},
    {0x1CBD,0x1CBF}, {0x1CE9,0x1CEC}, {0x1CEE,0x1CF3}, {0x1CF5,0x1CF6}, {0x1CFA,0x1CFA},
    {0x1D00,0x1DBF}, {0x1E00,0x1F15}, {0x1F18,0x1F1D}, {0x1F20,0x1F45}, {0x1F48,0x1F4D},
    {0x1F50,0x1F57}, {0x1F59,0x1F59}, {0x1F5B,0x1F5B}, {0x1F5D,0x1F5D}, {0x1F5F,0x1F7D},
    {0x1F80,0x1FB4}, {0x1FB6,0x1FBC}, {0x1FBE,0x1FBE}, {0x1FC2,0x1FC4}, {0x1FC6,0x1FCC},
    {0x1FD0,0x1FD3}, {0x1FD6,0x1FDB}, {0x1FE0,0x1FEC}, {0x1FF2,0x1FF4}, {0x1FF6,0x1FFC},
    {0x2071,0x2071}, {0x207F,0x207F}, {0x2090,0x209C}, {0x2102,0x2102}, {0x2107,0x2107},
    {0x210A,0x2113}, {0x2115,0x2115}, {0x2119,0x211D}, {0x2124,0x2124}, {0x2126,0x2126},
    {0x2128,0x2128}, {0x212A,0x212D}, {0x212F,0x2139}, {0x213C,0x213F}, {0x2145,0x2149},
    {0x214E,0x214E}, {0x2183,0x2184}, {0x2C00,0x2CE4}, {0x2CEB,0x2CEE}, {0x2CF2,0x2CF3},
    {0x2D00,0x2D25}, {0x2D27,0x2D27}, {0x2D2D,0x2D2D}, {0x2D30,0x2D67}, {0x2D6F,0x2D6F},
    {0x2D80,0x2D96}, {0x2DA0,0x2DA6}, {0x2DA8,0x2DAE}, {0x2DB0,0x2DB6}, {0x2DB8,0x2DBE},
    {0x2DC0,0x2DC6}, {0x2DC8,0x2DCE}, {0x2DD0,0x2DD6}, {0x2DD8,0x2DDE}, {0x2E2F,0x2E2F},
    {0x3005,0x3006}, {0x3031,0x3035}, {0x303B,0x303C}, {0x3041,0x3096}, {0x309D,0x309F},
    {0x30A1,0x30FA}, {0x30FC,0x30FF}, {0x3105,0x312F}, {0x3131,0x318E}, {0x31A0,0x31BF},
    {0x31F0,0x31FF}, {0x3400,0x4DBF}, {0x4E00,0xA48C}, {0xA4D0,0xA4FD}, {0xA500,0xA60C},
    {0xA610,0xA61F}, {0xA62A,0xA62B}, {0xA640,0xA66E}, {0xA67F,0xA69D}, {0xA6A0,0xA6E5},
    {0xA717,0xA71F}, {0xA722,0xA788}, {0xA78B,0xA7CD}, {0xA7D0,0xA7D1}, {0xA7D3,0xA7D3},
    {0xA7D5,0xA7DC}, {0xA7F2,0xA801}, {0xA803,0xA805}, {0xA807,0xA80A}, {0xA80C,0xA822},
    {0xA840,0xA873}, {0xA882,0xA8B3}, {0xA8F2,0xA8F7}, {0xA8FB,0xA8FB}, {0xA8FD,0xA8FE},
    {0xA90A,0xA925}, {0xA930,0xA946}, {0xA960,0xA97C}, {0xA984,0xA9B2}, {0xA9CF,0xA9CF},
    {0xA9E0,0xA9E4}, {0xA9E6,0xA9EF}, {0xA9FA,0xA9FE}, {0xAA00,0xAA28}, {0xAA40,0xAA42},
    {0xAA44,0xAA4B}, {0xAA60,0xAA76}, {0xAA7A,0xAA7A}, {0xAA7E,0xAAAF}, {0xAAB1,0xAAB1},
    {0xAAB5,0xAAB6}, {0xAAB9,0xAABD}, {0xAAC0,0xAAC0}, {0xAAC2,0xAAC2}, {0xAADB,0xAADD},
    {0xAAE0,0xAAEA}, {0xAAF2,0xAAF4}, {0xAB01,0xAB06}, {0xAB09,0xAB0E}, {0xAB11,0xAB16},
    {0xAB20,0xAB26}, {0xAB28,0xAB2E}, {0xAB30,0xAB5A}, {0xAB5C,0xAB69}, {0xAB70,0xABE2},
    {0xAC00,0xD7A3}, {0xD7B0,0xD7C6}, {0xD7CB,0xD7FB}, {0xF900,0xFA6D}, {0xFA70,0xFAD9},
    {0xFB00,0xFB06}, {0xFB13,0xFB17}, {0xFB1D,0xFB1D}, {0xFB1F,0xFB28}, {0xFB2A,0xFB36},
    {0xFB38,0xFB3C}, {0xFB3E,0xFB3E}, {0xFB40,0xFB41}, {0xFB43,0xFB44}, {0xFB46,0xFBB1},
    {0xFBD3,0xFD3D}, {0xFD50,0xFD8F}, {0xFD92,0xFDC7}, {0xFDF0,0xFDFB}, {0xFE70,0xFE74},
    {0xFE76,0xFEFC}, {0xFF21,0xFF3A}, {0xFF41,0xFF5A}, {0xFF66,0xFFBE}, {0xFFC2,0xFFC7},
    {0xFFCA,0xFFCF}, {0xFFD2,0xFFD7}, {0xFFDA,0xFFDC}, {0x10000,0x1000B}, {0x1000D,0x10026},
    {0x10028,0x1003A}, {0x1003C,0x1003D}, {0x1003F,0x1004D}, {0x10050,0x1005D}, {0x10080,0x100FA},
    {0x10280,0x1029C}, {0x102A0,0x102D0}, {0x10300,0x1031F}, {0x1032D,0x10340}, {0x10342,0x10349},
    {0x10350,0x10375}, {0x10380,0x1039D}, {0x103A0,0x103C3}, {0x103C8,0x103CF}, {0x10400,0x1049D},
    {0x104B0,0x104D3}, {0x104D8,0x104FB}, {0x10500,0x10527}, {0x10530,0x10563}, {0x10570,0x1057A},
    {0x1057C,0x1058A}, {0x1058C,0x10592}, {0x10594,0x10595}, {0x10597,0x105A1}, {0x105A3,0x105B1},
    {0x105B3,0x105B9}, {0x105BB,0x105BC}, {0x105C0,0x105F3}, {0x10600,0x10736}, {0x10740,0x10755},
    {0x10760,0x10767}, {0x10780,0x10785}, {0x10787,0x107B0}, {0x107B2,0x107BA}, {0x10800,0x10805},
    {0x10808,0x10808}, {0x1080A,0x10835}, {0x10837,0x10838}, {0x1083C,0x1083C}, {0x1083F,0x10855},
    {0x10860,0x10876}, {0x10880,0x1089E}, {0x108E0,0x108F2}, {0x108F4,0x108F5}, {0x10900,0x10915},
    {0x10920,0x10939}, {0x10980,0x109B7}, {0x109BE,0x109BF}, {0x10A00,0x10A00}, {0x10A10,0x10A13},
    {0x10A15,0x10A17}, {0x10A19,0x10A35}, {0x10A60,0x10A7C}, {0x10A80,0x10A9C}, {0x10AC0,0x10AC7},
    {0x10AC9,0x10AE4}, {0x10B00,0x10B35}, {0x10B40,0x10B55}, {0x10B60,0x10B72}, {0x10B80,0x10B91},
    {0x10C00,0x10C48}, {0x10C80,0x10CB2}, {0x10CC0,0x10CF2}, {0x10D00,0x10D23}, {0x10D4A,0x10D65},
    {0x10D6F,0x10D85}, {0x10E80,0x10EA9}, {0x10EB0,0x10EB1}, {0x10EC2,0x10EC4}, {0x10F00,0x10F1C},
    {0x10F27,0x10F27}, {0x10F30,0x10F45}, {0x10F70,0x10F81}, {0x10FB0,0x10FC4}, {0x10FE0,0x10FF6},
    {0x11003,0x11037}, {0x11071,0x11072}, {0x11075,0x11075}, {0x11083,0x110AF}, {0x110D0,0x110E8},
    {0x11103,0x11126}, {0x11144,0x11144}, {0x11147,0x11147}, {0x11150,0x11172}, {0x11176,0x11176},
    {0x11183,0x111B2}, {0x111C1,0x111C4}, {0x111DA,0x111DA}, {0x111DC,0x111DC}, {0x11200,0x11211},
    {0x11213,0x1122B}, {0x1123F,0x11240}, {0x11280,0x11286}, {0x11288,0x11288}, {0x1128A,0x1128D},
    {0x1128F,0x1129D}, {0x1129F,0x112A8}, {0x112B0,0x112DE}, {0x11305,0x1130C}, {0x1130F,0x11310},
    {0x11313,0x11328}, {0x1132A,0x11330}, {0x11332,0x11333}, {0x11335,0x11339}, {0x1133D,0x1133D},
    {0x11350,0x11350}, {0x1135D,0x11361}, {0x11380,0x11389}, {0x1138B,0x1138B}, {0x1138E,0x1138E},
    {0x11390,0x113B5}, {0x113B7,0x113B7}, {0x113D1,0x113D1}, {0x113D3,0x113D3}, {0x11400,0x11434},
    {0x11447,0x1144A}, {0x1145F,0x11461}, {0x11480,0x114AF}, {0x114C4,0x114C5}, {0x114C7,0x114C7},
    {0x11580,0x115AE}, {0x115D8,0x115DB}, {0x11600,0x1162F}, {0x11644,0x11644}, {0x11680,0x116AA},
    {0x116B8,0x116B8}, {0x11700,0x1171A}, {0x11740,0x11746}, {0x11800,0x1182B}, {0x118A0,0x118DF},
    {0x118FF,0x11906}, {0x11909,0x11909}, {0x1190C,0x11913}, {0x11915,0x11916}, {0x11918,0x1192F},
    {0x1193F,0x1193F}, {0x11941,0x11941}, {0x119A0,0x119A7}, {0x119AA,0x119D0}, {0x119E1,0x119E1},
    {0x119E3,0x119E3}, {0x11A00,0x11A00}, {0x11A0B,0x11A32}, {0x11A3A,0x11A3A}, {0x11A50,0x11A50},
    {0x11A5C,0x11A89}, {0x11A9D,0x11A9D}, {0x11AB0,0x11AF8}, {0x11BC0,0x11BE0}, {0x11C00,0x11C08},
    {0x11C0A,0x11C2E}, {0x11C40,0x11C40}, {0x11C72,0x11C8F}, {0x11D00,0x11D06}, {0x11D08,0x11D09},
    {0x11D0B,0x11D30}, {0x11D46,0x11D46}, {0x11D60,0x11D65}, {0x11D67,0x11D68}, {0x11D6A,0x11D89},
    {0x11D98,0x11D98}, {0x11EE0,0x11EF2}, {0x11F02,0x11F02}, {0x11F04,0x11F10}, {0x11F12,0x11F33},
    {0x11FB0,0x11FB0}, {0x12000,0x12399}, {0x12480,0x12543}, {0x12F90,0x12FF0}, {0x13000,0x1342F},
    {0x13441,0x13446}, {0x13460,0x143FA}, {0x14400,0x14646}, {0x16100,0x1611D}, {0x16800,0x16A38},
    {0x16A40,0x16A5E}, {0x16A70,0x16ABE}, {0x16AD0,0x16AED}, {0x16B00,0x16B2F}, {0x16B40,0x16B43},
    {0x16B63,0x16B77}, {0x16B7D,0x16B8F}, {0x16D40,0x16D6C}, {0x16E40,0x16E7F}, {0x16F00,0x16F4A},
    {0x16F50,0x16F50}, {0x16F93,0x16F9F}, {0x16FE0,0x16FE1}, {0x16FE3,0x16FE3}, {0x17000,0x187F7},
    {0x18800,0x18CD5}, {0x18CFF,0x18D08}, {0x1AFF0,0x1AFF3}, {0x1AFF5,0x1AFFB}, {0x1AFFD,0x1AFFE},
    {0x1B000,0x1B122}, {0x1B132,0x1B132}, {0x1B150,0x1B152}, {0x1B155,0x1B155}, {0x1B164,0x1B167},
    {0x1B170,0x1B2FB}, {0x1BC00,0x1BC6A}, {0x1BC70,0x1BC7C}, {0x1BC80,0x1BC88}, {0x1BC90,0x1BC99},
    {0x1D400,0x1D454}, {0x1D456,0x1D49C}, {0x1D49E,0x1D49F}, {0x1D4A2,0x1D4A2}, {0x1D4A5,0x1D4A6},
    {0x1D4A9,0x1D4AC}, {0x1D4AE,0x1D4B9}, {0x1D4BB,0x1D4BB}, {0x1D4BD,0x1D4C3}, {0x1D4C5,0x1D505},
    {0x1D507,0x1D50A}, {0x1D50D,0x1D514}, {0x1D516,0x1D51C}, {0x1D51E,0x1D539}, {0x1D53B,0x1D53E},
    {0x1D540,0x1D544}, {0x1D546,0x1D546}, {0x1D54A,0x1D550}, {0x1D552,0x1D6A5}, {0x1D6A8,0x1D6C0},
    {0x1D6C2,0x1D6DA}, {0x1D6DC,0x1D6FA}, {0x1D6FC,0x1D714}, {0x1D716,0x1D734}, {0x1D736,0x1D74E},
    {0x1D750,0x1D76E}, {0x1D770,0x1D788}, {0x1D78A,0x1D7A8}, {0x1D7AA,0x1D7C2}, {0x1D7C4,0x1D7CB},
    {0x1DF00,0x1DF1E}, {0x1DF25,0x1DF2A}, {0x1E030,0x1E06D}, {0x1E100,0x1E12C}, {0x1E137,0x1E13D},
    {0x1E14E,0x1E14E}, {0x1E290,0x1E2AD}, {0x1E2C0,0x1E2EB}, {0x1E4D0,0x1E4EB}, {0x1E5D0,0x1E5ED},
    {0x1E5F0,0x1E5F0}, {0x1E7E0,0x1E7E6}, {0x1E7E8,0x1E7EB}, {0x1E7ED,0x1E7EE}, {0x1E7F0,0x1E7FE},
    {0x1E800,0x1E8C4}, {0x1E900,0x1E943}, {0x1E94B,0x1E94B}, {0x1EE00,0x1EE03}, {0x1EE05,0x1EE1F},
    {0x1EE21,0x1EE22}, {0x1EE24,0x1EE24}, {0x1EE27,0x1EE27}, {0x1EE29,0x1EE32}, {0x1EE34,0x1EE37},
    {0x1EE39,0x1EE39}, {0x1EE3B,0x1EE3B}, {0x1EE42,0x1EE42}, {0x1EE47,0x1EE47}, {0x1EE49,0x1EE49},
    {0x1EE4B,0x1EE4B}, {0x1EE4D,0x1EE4F}, {0x1EE51,0x1EE52}, {0x1EE54,0x1EE54}, {0x1EE57,0x1EE57},
    {0x1EE59,0x1EE59}, {0x1EE5B,0x1EE5B}, {0x1EE5D,0x1EE5D}, {0x1EE5F,0x1EE5F}, {0x1EE61,0x1EE62},
    {0x1EE64,0x1EE64}, {0x1EE67,0x1EE6A}, {0x1EE6C,0x1EE72}, {0x1EE74,0x1EE77}, {0x1EE79,0x1EE7C},
    {0x1EE7E,0x1EE7E}, {0x1EE80,0x1EE89}, {0x1EE8B,0x1EE9B}, {0x1EEA1,0x1EEA3}, {0x1EEA5,0x1EEA9},
    {0x1EEAB,0x1EEBB}, {0x20000,0x2A6DF}, {0x2A700,0x2B739}, {0x2B740,0x2B81D}, {0x2B820,0x2CEA1},
    {0x2CEB0,0x2EBE0}, {0x2EBF0,0x2EE5D}, {0x2F800,0x2FA1D}, {0x30000,0x3134A}, {0x31350,0x323AF},
};
/* \p{N}: general category Nd Nl No: 144 ranges [first, last] */
static const uint32_t codi__uni_number[][2] = {
    {0x30,0x39}, {0xB2,0xB3}, {0xB9,0xB9}, {0xBC,0xBE}, {0x660,0x669}, {0x6F0,0x6F9}, {0x7C0,0x7C9},
    {0x966,0x96F}, {0x9E6,0x9EF}, {0x9F4,0x9F9}, {0xA66,0xA6F}, {0xAE6,0xAEF}, {0xB66,0xB6F},
    {0xB72,0xB77}, {0xBE6,0xBF2}, {0xC66,0xC6F}, {0xC78,0xC7E}, {0xCE6,0xCEF}, {0xD58,0xD5E},
    {0xD66,0xD78}, {0xDE6,0xDEF}, {0xE50,0xE59}, {0xED0,0xED9}, {0xF20,0xF33}, {0x1040,0x1049},
    {0x1090,0x1099}, {0x1369,0x137C}, {0x16EE,0x16F0}, {0x17E0,0x17E9}, {0x17F0,0x17F9},
    {0x1810,0x1819}, {0x1946,0x194F}, {0x19D0,0x19DA}, {0x1A80,0x1A89}, {0x1A90,0x1A99},
    {0x1B50,0x1B59}, {0x1BB0,0x1BB9}, {0x1C40,0x1C49}, {0x1C50,0x1C59}, {0x2070,0x2070},
    {0x2074,0x2079}, {0x2080,0x2089}, {0x2150,0x2182}, {0x2185,0x2189}, {0x2460,0x249B},
    {0x24EA,0x24FF}, {0x2776,0x2793}, {0x2CFD,0x2CFD}, {0x3007,0x3007}, {0x3021,0x3029},
    {0x3038,0x303A}, {0x3192,0x3195}, {0x3220,0x3229}, {0x3248,0x324F}, {0x3251,0x325F},
    {0x3280,0x3289}, {0x32B1,0x32BF}, {0xA620,0xA629}, {0xA6E6,0xA6EF}, {0xA830,0xA835},
    {0xA8D0,0xA8D9}, {0xA900,0xA909}, {0xA9D0,0xA9D9}, {0xA9F0,0xA9F9}, {0xAA50,0xAA59},
    {0xABF0,0xABF9}, {0xFF10,0xFF19}, {0x10107,0x10133}, {0x10140,0x10178}, {0x1018A,0x1018B},
    {0x102E1,0x102FB}, {0x10320,0x10323}, {0x10341,0x10341}, {0x1034A,0x1034A}, {0x103D1,0x103D5},
    {0x104A0,0x104A9}, {0x10858,0x1085F}, {0x10879,0x1087F}, {0x108A7,0x108AF}, {0x108FB,0x108FF},
    {0x10916,0x1091B}, {0x109BC,0x109BD}, {0x109C0,0x109CF}, {0x109D2,0x109FF}, {0x10A40,0x10A48},
    {0x10A7D,0x10A7E}, {0x10A9D,0x10A9F}, {0x10AEB,0x10AEF}, {0x10B58,0x10B5F}, {0x10B78,0x10B7F},
    {0x10BA9,0x10BAF}, {0x10CFA,0x10CFF}, {0x10D30,0x10D39}, {0x10D40,0x10D49}, {0x10E60,0x10E7E},
    {0x10F1D,0x10F26}, {0x10F51,0x10F54}, {0x10FC5,0x10FCB}, {0x11052,0x1106F}, {0x110F0,0x110F9},
    {0x11136,0x1113F}, {0x111D0,0x111D9}, {0x111E1,0x111F4}, {0x112F0,0x112F9}, {0x11450,0x11459},
    {0x114D0,0x114D9}, {0x11650,0x11659}, {0x116C0,0x116C9}, {0x116D0,0x116E3}, {0x11730,0x1173B},
    {0x118E0,0x118F2}, {0x11950,0x11959}, {0x11BF0,0x11BF9}, {0x11C50,0x11C6C}, {0x11D50,0x11D59},
    {0x11DA0,0x11DA9}, {0x11F50,0x11F59}, {0x11FC0,0x11FD4}, {0x12400,0x1246E}, {0x16130,0x16139},
    {0x16A60,0x16A69}, {0x16AC0,0x16AC9}, {0x16B50,0x16B59}, {0x16B5B,0x16B61}, {0x16D70,0x16D79},
    {0x16E80,0x16E96}, {0x1CCF0,0x1CCF9}, {0x1D2C0,0x1D2D3}, {0x1D2E0,0x1D2F3}, {0x1D360,0x1D378},
    {0x1D7CE,0x1D7FF}, {0x1E140,0x1E149}, {0x1E2F0,0x1E2F9}, {0x1E4F0,0x1E4F9}, {0x1E5F1,0x1E5FA},
    {0x1E8C7,0x1E8CF}, {0x1E950,0x1E959}, {0x1EC71,0x1ECAB}, {0x1ECAD,0x1ECAF}, {0x1ECB1,0x1ECB4},
    {0x1ED01,0x1ED2D}, {0x1ED2F,0x1ED3D}, {0x1F100,0x1F10C}, {0x1FBF0,0x1FBF9},
};
/* \s: property White_Space: 10 ranges [first, last] */
static const uint32_t codi__uni_space[][2] = {
    {0x9,0xD}, {0x20,0x20}, {0x85,0x85}, {0xA0,0xA0}, {0x1680,0x1680}, {0x2000,0x200A},
    {0x2028,0x2029}, {0x202F,0x202F}, {0x205F,0x205F}, {0x3000,0x3000},
};
/* END generated */

enum { CODI__CH_OTHER = 0, CODI__CH_LETTER, CODI__CH_NUMBER, CODI__CH_SPACE };

static int codi__in_ranges(const uint32_t (*r)[2], int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

#define CODI__NRANGES(r) ((int)(sizeof r / sizeof r[0]))

/* \p{L}, \p{N}, \s or none of them; an invalid UTF-8 byte (cp = 0xFFFFFFFF) is none. */
static int codi__char_class(uint32_t cp) {
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CODI__CH_LETTER;
        if (cp >= '0' && cp <= '9') return CODI__CH_NUMBER;
        return cp == ' ' || (cp >= 9 && cp <= 13) ? CODI__CH_SPACE : CODI__CH_OTHER;
    }
    if (codi__in_ranges(codi__uni_letter, CODI__NRANGES(codi__uni_letter), cp)) return CODI__CH_LETTER;
    if (codi__in_ranges(codi__uni_number, CODI__NRANGES(codi__uni_number), cp)) return CODI__CH_NUMBER;
    if (codi__in_ranges(codi__uni_space, CODI__NRANGES(codi__uni_space), cp)) return CODI__CH_SPACE;
    return CODI__CH_OTHER;
}

/* Decodes the character at s[0..n), n > 0: its byte length, and *cp (0xFFFFFFFF for a byte
   that does not start a valid sequence: overlong, surrogate, > U+10FFFF or cut short). */
static int codi__utf8_next(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned b = s[0], lo = 0x80, hi = 0xBF;
    int need, i;
    uint32_t c;
    if (b < 0x80) { *cp = b; return 1; }
    if (b >= 0xC2 && b <= 0xDF) { need = 1; c = b & 0x1F; }
    else if (b >= 0xE0 && b <= 0xEF) { need = 2; c = b & 0x0F; if (b == 0xE0) lo = 0xA0; if (b == 0xED) hi = 0x9F; }
    else if (b >= 0xF0 && b <= 0xF4) { need = 3; c = b & 0x07; if (b == 0xF0) lo = 0x90; if (b == 0xF4) hi = 0x8F; }
    else { *cp = 0xFFFFFFFFu; return 1; }
    if ((size_t)need >= n) { *cp = 0xFFFFFFFFu; return 1; }
    for (i = 1; i <= need; i++) {
        if (s[i] < lo || s[i] > hi) { *cp = 0xFFFFFFFFu; return 1; }
        c = (c << 6) | (s[i] & 0x3Fu);
        lo = 0x80; hi = 0xBF;
    }
    *cp = c;
    return need + 1;
}

CODI_API long codi_utf8_invalid_at(const char *text, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        int l = codi__utf8_next((const unsigned char *)text + i, len - i, &cp);
        if (cp == 0xFFFFFFFFu) return (long)i;
        i += (size_t)l;
    }
    return -1;
}

/* Incremental UTF-8 repair, as Rust's String::from_utf8_lossy (which Hugging Face's decoders
   use): whole characters pass, each maximal invalid subsequence becomes one U+FFFD. */
typedef struct { char *p; size_t cap, n; } codi__sink;   /* writes what fits, counts it all */

static void codi__sink_put(codi__sink *k, const void *b, size_t len) {
    if (k->n + 1 < k->cap) {
        size_t room = k->cap - 1 - k->n;
        memcpy(k->p + k->n, b, len < room ? len : room);
    }
    k->n += len;
}

static void codi__sink_end(codi__sink *k) {
    if (k->cap) k->p[k->n < k->cap ? k->n : k->cap - 1] = 0;
}

static void codi__utf8_feed(codi_utf8_state *st, const unsigned char *b, size_t len, codi__sink *k) {
    static const unsigned char fffd[3] = { 0xEF, 0xBF, 0xBD };
    size_t i = 0;
    while (i < len) {
        unsigned c = b[i];
        if (st->need == 0) {
            i++;
            if (c < 0x80) { codi__sink_put(k, b + i - 1, 1); continue; }
            st->lo = 0x80; st->hi = 0xBF; st->n_part = 1; st->part[0] = (unsigned char)c;
            if (c >= 0xC2 && c <= 0xDF) st->need = 1;
            else if (c >= 0xE0 && c <= 0xEF) { st->need = 2; if (c == 0xE0) st->lo = 0xA0; if (c == 0xED) st->hi = 0x9F; }
            else if (c >= 0xF0 && c <= 0xF4) { st->need = 3; if (c == 0xF0) st->lo = 0x90; if (c == 0xF4) st->hi = 0x8F; }
            else { codi__sink_put(k, fffd, 3); st->n_part = 0; }
        } else if (c >= st->lo && c <= st->hi) {
            i++;
            st->part[st->n_part++] = (unsigned char)c; st->lo = 0x80; st->hi = 0xBF;
            if (--st->need == 0) { codi__sink_put(k, st->part, (size_t)st->n_part); st->n_part = 0; }
        } else {                     /* the sequence broke off: replace it, read c afresh */
            codi__sink_put(k, fffd, 3); st->need = 0; st->n_part = 0;
        }
    }
}

static void codi__utf8_flush(codi_utf8_state *st, codi__sink *k) {
    if (st->need) codi__sink_put(k, "\xEF\xBF\xBD", 3);
    st->need = 0; st->n_part = 0;
}

/* >>tokenizer: Llama 3's pre-tokenizer, byte-level BPE, encode and decode ------------------ */

/* tokenizer.json stores byte-level tokens with GPT-2's byte-to-unicode map: the printable bytes
   '!'..'~', 0xA1..0xAC, 0xAE..0xFF stand for themselves, the other 68 bytes for U+0100.. in order.
   Returns the byte a code point stands for, or -1. */
static int codi__unbyte(uint32_t cp) {
    if ((cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF)) return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    cp -= 256;                                   /* the n-th unprintable byte: 0..32, 127..160, 173 */
    return cp < 33 ? (int)cp : cp < 67 ? (int)cp + 94 : 173;
}

/* The JSON string s, a byte-level token, as raw bytes into out (>= len bytes); -1 if a
   character is outside GPT-2's byte map. */
static long codi__unbyte_str(const char *s, size_t len, unsigned char *out) {
    size_t i = 0; long n = 0;
    while (i < len) {
        uint32_t cp;
        int l = codi__utf8_next((const unsigned char *)s + i, len - i, &cp), b = codi__unbyte(cp);
        if (b < 0) return -1;
        out[n++] = (unsigned char)b;
        i += (size_t)l;
    }
    return n;
}

/* Token ids are below 2^24, and a file's ids below its entry count + 1024 (no huge sparse tables). */
#define CODI__MAX_TOKEN_ID 16777216
#define CODI__ID_SLACK 1024

typedef struct { uint64_t key; int32_t rank, id; } codi__merge;          /* key = a << 32 | b */
typedef struct {                /* an added token: its text (matched in raw text) and flags */
    int32_t id; uint32_t off, len;   /* text = added_text[off .. off + len) */
    unsigned char special, lstrip, rstrip, single_word, normalized;
} codi__added;

typedef struct {
    int32_t *vocab; uint32_t vocab_mask;       /* open hash: BPE token bytes -> id (-1 empty) */
    codi__merge *merges; uint32_t merge_mask;  /* open hash: pair -> rank, merged id (key ~0 empty) */
    int rank_by_concat;                        /* tiktoken: a + b merges into the token a+b, rank = its id */
    int32_t byte_id[256];                      /* single-byte token of each byte, -1 if none */
    int ignore_merges;                         /* a piece that is a token is taken whole */
    int add_prefix_space;                      /* ByteLevel: a space before text not starting with one */
    codi__added *added; int n_added, cap_added;  /* sorted by first byte, then longest first */
    char *added_text; size_t n_added_text, cap_added_text;
    int n_normalized;                          /* added tokens matched after normalization */
    int added_from[257];                       /* added[added_from[b] .. added_from[b+1]) start with byte b */
    int32_t prefix[4], suffix[4]; int n_prefix, n_suffix, has_template;  /* post-processor */
    size_t cap_bytes, n_bytes; int cap_ids;
} codi__tok_internal;

static uint32_t codi__hash_bytes(const unsigned char *p, size_t n) {
    uint32_t h = 2166136261u;               /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h ^ (h >> 15);
}

static uint32_t codi__hash_pair(uint64_t key) {
    key ^= key >> 33; key *= 0xff51afd7ed558ccdull; key ^= key >> 33;
    return (uint32_t)key;
}

static int codi__vocab_find(const codi_tokenizer *t, const unsigned char *p, size_t n) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    uint32_t h;
    if (!ti->vocab) return -1;
    for (h = codi__hash_bytes(p, n) & ti->vocab_mask;; h = (h + 1) & ti->vocab_mask) {
        int32_t id = ti->vocab[h];
        if (id < 0) return -1;
        if (t->length[id] == n && memcmp(t->bytes + t->offset[id], p, n) == 0) return id;
    }
}

/* The merge of adjacent tokens a, b: 1 with its rank (lower merges first) and merged id, or 0. */
static int codi__merge_find(const codi_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    if (ti->rank_by_concat) {
        unsigned char buf[512];
        size_t la = t->length[a], lb = t->length[b];
        if (la + lb > sizeof buf) return 0;
        memcpy(buf, t->bytes + t->offset[a], la); memcpy(buf + la, t->bytes + t->offset[b], lb);
        *id = *rank = codi__vocab_find(t, buf, la + lb);
        return *id >= 0;
    } else {
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        uint32_t h;
        for (h = codi__hash_pair(key) & ti->merge_mask;; h = (h + 1) & ti->merge_mask) {
            if (ti->merges[h].key == key) { *rank = ti->merges[h].rank; *id = ti->merges[h].id; return 1; }
            if (ti->merges[h].key == ~(uint64_t)0) return 0;
        }
    }
}

/* Sets token id's bytes (growing the tables) and its kind. 0, or -1 out of memory. */
static int codi__tok_set(codi_tokenizer *t, int id, const void *b, size_t n, int kind) {
    codi__tok_internal *ti = (codi__tok_internal *)t->internal;
    if (id >= ti->cap_ids) {
        int cap = ti->cap_ids ? ti->cap_ids : 1024, i;
        uint32_t *o, *l; unsigned char *k;
        while (cap <= id) cap *= 2;
        o = (uint32_t *)CODI_REALLOC(t->offset, (size_t)cap * 4);
        if (o) t->offset = o;
        l = (uint32_t *)CODI_REALLOC(t->length, (size_t)cap * 4);
        if (l) t->length = l;
        k = (unsigned char *)CODI_REALLOC(t->kind, (size_t)cap);
        if (k) t->kind = k;
        if (!o || !l || !k) return -1;
        for (i = ti->cap_ids; i < cap; i++) { t->offset[i] = 0; t->length[i] = 0; t->kind[i] = CODI_TOK_NONE; }
        ti->cap_ids = cap;
    }
    if (ti->n_bytes + n > ti->cap_bytes) {
        size_t cap = ti->cap_bytes ? ti->cap_bytes : 1 << 16;
        char *nb;
        while (cap < ti->n_bytes + n) cap *= 2;
        if (cap > UINT32_MAX || !(nb = (char *)CODI_REALLOC(t->bytes, cap))) return -1;
        t->bytes = nb; ti->cap_bytes = cap;
    }
    memcpy(t->bytes + ti->n_bytes, b, n);
    t->offset[id] = (uint32_t)ti->n_bytes; t->length[id] = (uint32_t)n; t->kind[id] = (unsigned char)kind;
    ti->n_bytes += n;
    if (id >= t->n_ids) t->n_ids = id + 1;
    if ((int)n > t->max_token_len) t->max_token_len = (int)n;
    return 0;
}

/* Builds the byte -> id table and the vocabulary hash over every BPE token. */
static int codi__tok_index(codi_tokenizer *t) {
    codi__tok_internal *ti = (codi__tok_internal *)t->internal;
    uint32_t size = 1;
    int id;
    while (size < 2u * (uint32_t)t->n_ids + 2) size *= 2;
    CODI_FREE(ti->vocab);
    if (!(ti->vocab = (int32_t *)CODI_MALLOC((size_t)size * sizeof(int32_t)))) return -1;
    memset(ti->vocab, 0xff, (size_t)size * sizeof(int32_t));
    ti->vocab_mask = size - 1;
    for (id = 0; id < 256; id++) ti->byte_id[id] = -1;
    for (id = 0; id < t->n_ids; id++) {
        const unsigned char *p = (const unsigned char *)t->bytes + t->offset[id];
        uint32_t h;
        if (t->kind[id] != CODI_TOK_BPE) continue;
        if (t->length[id] == 1 && ti->byte_id[p[0]] < 0) ti->byte_id[p[0]] = id;
        for (h = codi__hash_bytes(p, t->length[id]) & ti->vocab_mask; ti->vocab[h] >= 0; h = (h + 1) & ti->vocab_mask)
            if (t->length[ti->vocab[h]] == t->length[id] && !memcmp(t->bytes + t->offset[ti->vocab[h]], p, t->length[id])) break;
        if (ti->vocab[h] < 0) ti->vocab[h] = id;          /* the first id of duplicate bytes wins */
    }
    return 0;
}

#define CODI__ADDED_TEXT(ti, a) ((const unsigned char *)(ti)->added_text + (a)->off)

static int codi__added_cmp(const codi__tok_internal *ti, const codi__added *a, const codi__added *b) {
    unsigned char fa = CODI__ADDED_TEXT(ti, a)[0], fb = CODI__ADDED_TEXT(ti, b)[0];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return 0;
}

/* Re-sorts the added tokens (insertion sort: they are few) and their first-byte buckets. */
static void codi__added_sort(codi_tokenizer *t) {
    codi__tok_internal *ti = (codi__tok_internal *)t->internal;
    int i, j, b;
    for (i = 1; i < ti->n_added; i++) {
        codi__added x = ti->added[i];
        for (j = i; j > 0 && codi__added_cmp(ti, &ti->added[j - 1], &x) > 0; j--) ti->added[j] = ti->added[j - 1];
        ti->added[j] = x;
    }
    for (b = 0, i = 0; b <= 256; b++) {
        while (i < ti->n_added && CODI__ADDED_TEXT(ti, &ti->added[i])[0] < b) i++;
        ti->added_from[b] = i;
    }
}

/* The vocabulary id HF gives an added token whose text spells a vocabulary token in the
   tokenizer.json alphabet (GPT-2's byte map), or -1. */
static int codi__added_vocab_id(const codi_tokenizer *t, const char *text, size_t n) {
    unsigned char *b = (unsigned char *)CODI_MALLOC(n + 1);
    long m = b ? codi__unbyte_str(text, n, b) : -1;
    int id = m > 0 ? codi__vocab_find(t, b, (size_t)m) : -1;
    CODI_FREE(b);
    return id;
}

/* Adds text as added token id. A new id decodes to the text through GPT-2's byte map where
   every character is in it (HF's ByteLevel decoder: "\u0120x" -> " x"), else to the text as is;
   an id the vocabulary has keeps its bytes. 0, or -1 out of memory. */
static int codi__added_push(codi_tokenizer *t, int id, const char *text, size_t n, int special,
                            int lstrip, int rstrip, int single_word, int normalized) {
    codi__tok_internal *ti = (codi__tok_internal *)t->internal;
    codi__added *a;
    if (n == 0 || n > UINT32_MAX) return -1;
    if (ti->n_added == ti->cap_added) {
        int cap = ti->cap_added ? ti->cap_added * 2 : 64;
        codi__added *na = (codi__added *)CODI_REALLOC(ti->added, (size_t)cap * sizeof *na);
        if (!na) return -1;
        ti->added = na; ti->cap_added = cap;
    }
    if (ti->n_added_text + n > ti->cap_added_text) {
        size_t cap = ti->cap_added_text ? ti->cap_added_text : 4096;
        char *nt;
        while (cap < ti->n_added_text + n) cap *= 2;
        if (cap > UINT32_MAX || !(nt = (char *)CODI_REALLOC(ti->added_text, cap))) return -1;
        ti->added_text = nt; ti->cap_added_text = cap;
    }
    if (id >= t->n_ids || t->kind[id] == CODI_TOK_NONE) {
        unsigned char *dec = (unsigned char *)CODI_MALLOC(n);
        long m = dec ? codi__unbyte_str(text, n, dec) : -1;
        int rc = dec ? codi__tok_set(t, id, m > 0 ? (const void *)dec : text, m > 0 ? (size_t)m : n, special ? CODI_TOK_SPECIAL : CODI_TOK_ADDED) : -1;
        CODI_FREE(dec);
        if (rc) return -1;
    } else if (special) t->kind[id] = CODI_TOK_SPECIAL;
    memcpy(ti->added_text + ti->n_added_text, text, n);
    a = &ti->added[ti->n_added++];
    a->off = (uint32_t)ti->n_added_text; a->len = (uint32_t)n;
    ti->n_added_text += n;
    a->id = id; a->special = (unsigned char)special; a->lstrip = (unsigned char)lstrip;
    a->rstrip = (unsigned char)rstrip; a->single_word = (unsigned char)single_word; a->normalized = (unsigned char)normalized;
    ti->n_normalized += normalized != 0;
    return 0;
}

static int codi__added_find(const codi_tokenizer *t, const char *text, size_t n) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    int i;
    if (!n) return -1;
    for (i = ti->added_from[(unsigned char)text[0]]; i < ti->added_from[(unsigned char)text[0] + 1]; i++)
        if (ti->added[i].len == n && !memcmp(CODI__ADDED_TEXT(ti, &ti->added[i]), text, n)) return ti->added[i].id;
    return -1;
}

CODI_API int codi_token_id(const codi_tokenizer *t, const char *bytes, size_t len) {
    int id = codi__added_find(t, bytes, len);
    return id >= 0 ? id : codi__vocab_find(t, (const unsigned char *)bytes, len);
}

CODI_API int codi_tokenizer_add_token(codi_tokenizer *t, const char *text, int id, int special, char *err, size_t errsz) {
    size_t n = strlen(text);
    int have = codi__added_find(t, text, n), vid;
    if (n == 0) { codi__err(err, errsz, "an added token cannot be empty"); return -1; }
    if (have >= 0 && (id < 0 || id == have)) return have;
    if (have < 0 && (vid = codi__added_vocab_id(t, text, n)) >= 0) {      /* HF: text of a vocabulary token */
        if (id >= 0 && id != vid) { codi__err(err, errsz, "\"%s\" is vocabulary token %d", text, vid); return -1; }
        if (codi__added_push(t, vid, text, n, special, 0, 0, 0, 0)) { codi__err(err, errsz, "out of memory"); return -1; }
        codi__added_sort(t);
        return vid;
    }
    if (id < 0) id = t->n_ids;
    if (id >= CODI__MAX_TOKEN_ID) { codi__err(err, errsz, "token id %d out of range (0..%d)", id, CODI__MAX_TOKEN_ID - 1); return -1; }
    if (id < t->n_ids && t->kind[id] != CODI_TOK_NONE) {
        codi__err(err, errsz, "id %d is already token \"%.*s\"", id, (int)t->length[id], t->bytes + t->offset[id]);
        return -1;
    }
    if (have >= 0) { codi__err(err, errsz, "\"%s\" is already token %d", text, have); return -1; }
    if (codi__added_push(t, id, text, n, special, 0, 0, 0, 0)) { codi__err(err, errsz, "out of memory"); return -1; }
    codi__added_sort(t);
    return id;
}

CODI_API void codi_tokenizer_free(codi_tokenizer *t) {
    codi__tok_internal *ti;
    if (!t) return;
    ti = (codi__tok_internal *)t->internal;
    if (ti) { CODI_FREE(ti->vocab); CODI_FREE(ti->merges); CODI_FREE(ti->added); CODI_FREE(ti->added_text); CODI_FREE(ti); }
    CODI_FREE(t->bytes); CODI_FREE(t->offset); CODI_FREE(t->length); CODI_FREE(t->kind);
    CODI_FREE(t);
}

static codi_tokenizer *codi__tok_new(void) {
    codi_tokenizer *t = (codi_tokenizer *)CODI_MALLOC(sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->bos_id = -1;
    if (!(t->internal = CODI_MALLOC(sizeof(codi__tok_internal)))) { CODI_FREE(t); return NULL; }
    memset(t->internal, 0, sizeof(codi__tok_internal));
    return t;
}


/* A string member that may be a bare string or {"content": "..."} (tokenizer_config.json). */
static const char *codi__json_token_str(const codi_json *v) {
    if (v && v->type == CODI_JSON_OBJ) v = codi_json_get(v, "content");
    return v && v->type == CODI_JSON_STR ? v->str : NULL;
}

/* Reads the pre-tokenizer, decoder and post-processor settings; -1 with a message if they
   are not Llama 3's byte-level structure. */
static int codi__tok_pipeline(codi_tokenizer *t, const codi_json *root, char *err, size_t errsz) {
    static const char *llama3_regex =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    codi__tok_internal *ti = (codi__tok_internal *)t->internal;
    const codi_json *pre = codi_json_get(root, "pre_tokenizer"), *norm = codi_json_get(root, "normalizer");
    const codi_json *dec = codi_json_get(root, "decoder"), *post = codi_json_get(root, "post_processor");
    const codi_json *list, *p;
    int have_split = 0, have_bytelevel = 0;
    if (norm && norm->type != CODI_JSON_NULL) { codi__err(err, errsz, "tokenizer: normalizers are not supported (Llama 3 has none)"); return -1; }
    if (!pre || pre->type != CODI_JSON_OBJ) { codi__err(err, errsz, "tokenizer: expected Llama 3's pre-tokenizer (Split regex + ByteLevel)"); return -1; }
    list = codi_json_get(pre, "pretokenizers") ? codi_json_get(pre, "pretokenizers")->child : pre;
    for (p = list; p; p = p == pre ? NULL : p->next) {
        const codi_json *ty = codi_json_get(p, "type");
        const char *type = ty && ty->type == CODI_JSON_STR ? ty->str : "?";
        if (!strcmp(type, "Split")) {
            const codi_json *re = codi_json_get(codi_json_get(p, "pattern"), "Regex"), *beh = codi_json_get(p, "behavior");
            if (!re || re->type != CODI_JSON_STR || strcmp(re->str, llama3_regex) || !beh || beh->type != CODI_JSON_STR || strcmp(beh->str, "Isolated")) {
                codi__err(err, errsz, "tokenizer: only Llama 3's Split regex (behavior Isolated) is supported");
                return -1;
            }
            have_split = 1;
        } else if (!strcmp(type, "ByteLevel")) {
            const codi_json *ur = codi_json_get(p, "use_regex"), *aps = codi_json_get(p, "add_prefix_space");
            if (ur && ur->type == CODI_JSON_TRUE) { codi__err(err, errsz, "tokenizer: ByteLevel with use_regex (GPT-2's split) is not supported"); return -1; }
            if (!have_split) { codi__err(err, errsz, "tokenizer: ByteLevel before the Split regex is not supported"); return -1; }
            ti->add_prefix_space = aps && aps->type == CODI_JSON_TRUE;
            have_bytelevel = 1;
        } else { codi__err(err, errsz, "tokenizer: pre-tokenizer %s is not supported", type); return -1; }
    }
    if (!have_split || !have_bytelevel) { codi__err(err, errsz, "tokenizer: expected Llama 3's pre-tokenizer (Split regex + ByteLevel)"); return -1; }
    if (!codi__json_token_str(codi_json_get(dec, "type")) || strcmp(codi_json_get(dec, "type")->str, "ByteLevel")) {
        codi__err(err, errsz, "tokenizer: only the ByteLevel decoder is supported"); return -1;
    }
    /* post-processor: TemplateProcessing alone or in a Sequence (ByteLevel there changes no ids) */
    list = post && codi_json_get(post, "processors") ? codi_json_get(post, "processors")->child : post;
    for (p = list; p && p->type == CODI_JSON_OBJ; p = p == post ? NULL : p->next) {
        const codi_json *single = codi_json_get(p, "single"), *sp = codi_json_get(p, "special_tokens"), *e;
        int after = 0;
        if (!single || single->type != CODI_JSON_ARR) continue;
        ti->has_template = 1;
        for (e = single->child; e; e = e->next) {
            const codi_json *st = codi_json_get(e, "SpecialToken"), *ids, *x;
            const char *name;
            if (codi_json_get(e, "Sequence")) { after = 1; continue; }
            name = st ? codi__json_token_str(codi_json_get(st, "id")) : NULL;
            ids = name ? codi_json_get(codi_json_get(sp, name), "ids") : NULL;
            if (!ids || ids->type != CODI_JSON_ARR) { codi__err(err, errsz, "tokenizer: post-processor template entry without ids"); return -1; }
            for (x = ids->child; x; x = x->next) {
                int32_t *dst = after ? ti->suffix : ti->prefix;
                int *cnt = after ? &ti->n_suffix : &ti->n_prefix;
                if (x->type != CODI_JSON_NUM || *cnt == 4) { codi__err(err, errsz, "tokenizer: post-processor template too long"); return -1; }
                if (x->num < 0 || x->num >= CODI__MAX_TOKEN_ID) { codi__err(err, errsz, "tokenizer: post-processor id out of range"); return -1; }
                dst[(*cnt)++] = (int32_t)x->num;
            }
        }
    }
    return 0;
}

/* tokenizer.json: BPE model (vocab, merges as "a b" or ["a", "b"], ignore_merges), added_tokens. */
static codi_tokenizer *codi__tok_load_json(const char *path, const char *text, size_t len, char *err, size_t errsz) {
    codi_json *root = codi_json_parse(text, len, err, errsz);
    const codi_json *model, *vocab, *merges, *added, *v, *ty;
    codi__tok_internal *ti;
    codi_tokenizer *t;
    unsigned char *buf = NULL;
    double max_id;
    int i;
    if (!root) return NULL;
    if (!(t = codi__tok_new())) { codi_json_free(root); codi__err(err, errsz, "out of memory"); return NULL; }
    ti = (codi__tok_internal *)t->internal;
    model = codi_json_get(root, "model");
    vocab = codi_json_get(model, "vocab"); merges = codi_json_get(model, "merges");
    ty = codi_json_get(model, "type");
    if (!model || (ty && (ty->type != CODI_JSON_STR || strcmp(ty->str, "BPE")))) { codi__err(err, errsz, "%s: only BPE tokenizer models are supported", path); goto fail; }
    if (!vocab || vocab->type != CODI_JSON_OBJ || !merges || merges->type != CODI_JSON_ARR) { codi__err(err, errsz, "%s: model.vocab or model.merges missing", path); goto fail; }
    if (codi_json_get(model, "byte_fallback") && codi_json_get(model, "byte_fallback")->type == CODI_JSON_TRUE) {
        codi__err(err, errsz, "%s: byte_fallback BPE is not supported", path); goto fail;
    }
    {                           /* options that would change the output: refuse rather than ignore */
        static const char *opt[4] = { "continuing_subword_prefix", "end_of_word_suffix", "dropout", "unk_token" };
        int u;
        for (u = 0; u < 4; u++) {
            const codi_json *x = codi_json_get(model, opt[u]);
            if (x && x->type != CODI_JSON_NULL && !(x->type == CODI_JSON_STR && !x->len) && !(x->type == CODI_JSON_NUM && x->num == 0)) {
                codi__err(err, errsz, "%s: BPE %s is not supported", path, opt[u]); goto fail;
            }
        }
    }
    if (codi__tok_pipeline(t, root, err, errsz)) goto fail;
    added = codi_json_get(root, "added_tokens");
    max_id = (double)vocab->count + (added ? added->count : 0) + CODI__ID_SLACK;
    if (max_id > CODI__MAX_TOKEN_ID) max_id = CODI__MAX_TOKEN_ID;
    ti->ignore_merges = codi_json_get(model, "ignore_merges") && codi_json_get(model, "ignore_merges")->type == CODI_JSON_TRUE;
    if (!(buf = (unsigned char *)CODI_MALLOC(len + 1))) { codi__err(err, errsz, "out of memory"); goto fail; }
    for (v = vocab->child; v; v = v->next) {
        long n = codi__unbyte_str(v->key, v->keylen, buf);
        if (v->type != CODI_JSON_NUM || v->num < 0 || v->num >= max_id || v->num != (int)v->num) {
            codi__err(err, errsz, "%s: vocab entry \"%.40s\" has a bad id", path, v->key); goto fail;
        }
        if (n < 0) { codi__err(err, errsz, "%s: vocab entry \"%.40s\" is not a byte-level token", path, v->key); goto fail; }
        if ((int)v->num < t->n_ids && t->kind[(int)v->num] != CODI_TOK_NONE) {
            codi__err(err, errsz, "%s: id %d appears twice in the vocab", path, (int)v->num); goto fail;
        }
        if (codi__tok_set(t, (int)v->num, buf, (size_t)n, CODI_TOK_BPE)) { codi__err(err, errsz, "out of memory"); goto fail; }
    }
    if (t->n_ids == 0) { codi__err(err, errsz, "%s: the vocab is empty", path); goto fail; }
    if (codi__tok_index(t)) { codi__err(err, errsz, "out of memory"); goto fail; }
    /* merges: pair -> (rank, merged id), in a hash at most half full */
    {
        uint32_t size = 2;
        while (size < 2u * (uint32_t)merges->count + 2) size *= 2;
        if (!(ti->merges = (codi__merge *)CODI_MALLOC((size_t)size * sizeof(codi__merge)))) { codi__err(err, errsz, "out of memory"); goto fail; }
        memset(ti->merges, 0xff, (size_t)size * sizeof(codi__merge));
        ti->merge_mask = size - 1;
    }
    for (v = merges->child, i = 0; v; v = v->next, i++) {
        const char *a, *b; size_t la, lb;
        long na, nb;
        int32_t ia, ib, im;
        uint64_t key; uint32_t h;
        if (v->type == CODI_JSON_STR) {
            const char *sp = (const char *)memchr(v->str, ' ', v->len);
            if (!sp || memchr(sp + 1, ' ', v->len - (size_t)(sp + 1 - v->str))) { codi__err(err, errsz, "%s: merge %d \"%.40s\" is not two tokens", path, i, v->str); goto fail; }
            a = v->str; la = (size_t)(sp - v->str); b = sp + 1; lb = v->len - la - 1;
        } else if (v->type == CODI_JSON_ARR && v->count == 2 && v->child->type == CODI_JSON_STR && v->child->next->type == CODI_JSON_STR) {
            a = v->child->str; la = v->child->len; b = v->child->next->str; lb = v->child->next->len;
        } else { codi__err(err, errsz, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", path, i); goto fail; }
        na = codi__unbyte_str(a, la, buf); ia = na < 0 ? -1 : codi__vocab_find(t, buf, (size_t)na);
        nb = na < 0 ? -1 : codi__unbyte_str(b, lb, buf + na); ib = nb < 0 ? -1 : codi__vocab_find(t, buf + na, (size_t)nb);
        im = ia < 0 || ib < 0 ? -1 : codi__vocab_find(t, buf, (size_t)(na + nb));
        if (im < 0) { codi__err(err, errsz, "%s: merge %d \"%.40s\" names a token not in the vocab", path, i, v->type == CODI_JSON_STR ? v->str : a); goto fail; }
        key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        for (h = codi__hash_pair(key) & ti->merge_mask; ti->merges[h].key != ~(uint64_t)0 && ti->merges[h].key != key; h = (h + 1) & ti->merge_mask) {}
        /* a repeated merge takes its last rank, as HF's HashMap collect() of (pair, rank) does */
        ti->merges[h].key = key; ti->merges[h].rank = i; ti->merges[h].id = im;
    }
    t->n_merges = i;
    /* added tokens: their content is plain text, matched before pre-tokenization; one that spells
       a vocabulary token takes that token's id, as HF's AddedVocabulary does */
    for (v = added && added->type == CODI_JSON_ARR ? added->child : NULL; v; v = v->next) {
        const codi_json *id = codi_json_get(v, "id"), *c = codi_json_get(v, "content");
        int vid;
#define CODI__FLAG(name) (codi_json_get(v, name) && codi_json_get(v, name)->type == CODI_JSON_TRUE)
        if (!id || id->type != CODI_JSON_NUM || id->num < 0 || id->num >= max_id || !c || c->type != CODI_JSON_STR || !c->len) {
            codi__err(err, errsz, "%s: an added token lacks an id or content", path); goto fail;
        }
        vid = codi__added_vocab_id(t, c->str, c->len);
        if (codi__added_push(t, vid >= 0 ? vid : (int)id->num, c->str, c->len, CODI__FLAG("special"), CODI__FLAG("lstrip"), CODI__FLAG("rstrip"), CODI__FLAG("single_word"), CODI__FLAG("normalized"))) {
            codi__err(err, errsz, "out of memory"); goto fail;
        }
#undef CODI__FLAG
    }
    codi__added_sort(t);
    CODI_FREE(buf);
    codi_json_free(root);
    return t;
fail:
    CODI_FREE(buf);
    codi_json_free(root);
    codi_tokenizer_free(t);
    return NULL;
}

static int codi__base64_value(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* tiktoken: lines "base64(token bytes) rank"; the rank is the id and orders the merges. */
static codi_tokenizer *codi__tok_load_tiktoken(const char *path, const char *text, size_t len, char *err, size_t errsz) {
    codi_tokenizer *t = codi__tok_new();
    size_t i = 0;
    long max_rank = CODI__ID_SLACK;
    int line = 0;
    unsigned char buf[1024];
    if (!t) { codi__err(err, errsz, "out of memory"); return NULL; }
    for (i = 0; i < len && max_rank < CODI__MAX_TOKEN_ID; i++) max_rank += text[i] == '\n';
    i = 0;
    ((codi__tok_internal *)t->internal)->rank_by_concat = 1;
    ((codi__tok_internal *)t->internal)->ignore_merges = 1;
    while (i < len) {
        size_t n = 0; long rank = 0; int bits = 0, digits = 0;
        uint32_t acc = 0;
        line++;
        if (text[i] == '\n' || (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n')) { i += text[i] == '\r' ? 2 : 1; continue; }
        for (; i < len && text[i] != ' ' && text[i] != '\n'; i++) {
            int v = text[i] == '=' ? -2 : codi__base64_value((unsigned char)text[i]);
            if (v == -2) continue;
            if (v < 0 || n == sizeof buf) { codi__err(err, errsz, "%s:%d: bad base64 token", path, line); goto fail; }
            acc = (acc << 6) | (uint32_t)v; bits += 6;
            if (bits >= 8) { bits -= 8; buf[n++] = (unsigned char)(acc >> bits); }
        }
        if (i < len && text[i] == ' ') i++;
        for (; i < len && text[i] >= '0' && text[i] <= '9' && rank < CODI__MAX_TOKEN_ID; i++, digits++) rank = rank * 10 + (text[i] - '0');
        if (i < len && text[i] == '\r') i++;
        if (n == 0 || !digits || (i < len && text[i] != '\n')) { codi__err(err, errsz, "%s:%d: expected \"base64 rank\"", path, line); goto fail; }
        if (rank >= max_rank) { codi__err(err, errsz, "%s:%d: rank %ld is far beyond the file's %ld lines", path, line, rank, max_rank - CODI__ID_SLACK); goto fail; }
        i++;
        if (rank < t->n_ids && t->kind[rank] != CODI_TOK_NONE) { codi__err(err, errsz, "%s:%d: rank %ld appears twice", path, line, rank); goto fail; }
        if (codi__tok_set(t, (int)rank, buf, n, CODI_TOK_BPE)) { codi__err(err, errsz, "out of memory"); goto fail; }
    }
    if (t->n_ids == 0) { codi__err(err, errsz, "%s: no tokens in it", path); goto fail; }
    if (codi__tok_index(t)) { codi__err(err, errsz, "out of memory"); goto fail; }
    if (t->n_ids == 128000) {          /* Llama 3's special tokens, as Meta's tokenizer.py names them */
        static const char *named[11] = { "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
            "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>" };
        int k;
        for (k = 0; k < 256; k++) {
            char name[64];
            if (k < 11) snprintf(name, sizeof name, "%s", named[k]);
            else snprintf(name, sizeof name, "<|reserved_special_token_%d|>", k - 9);
            if (codi__added_push(t, 128000 + k, name, strlen(name), 1, 0, 0, 0, 0)) { codi__err(err, errsz, "out of memory"); goto fail; }
        }
        codi__added_sort(t);
    }
    return t;
fail:
    codi_tokenizer_free(t);
    return NULL;
}

CODI_API codi_tokenizer *codi_tokenizer_load(const char *path, char *err, size_t errsz) {
    char inside[4096], buf[4096];
    codi__file *f;
    codi_tokenizer *t;
    size_t i = 0;
    f = codi__file_open(path, err, errsz);
    if (!f && strlen(path) + 16 < sizeof inside) {        /* a directory holding tokenizer.json */
        char e2[64];
        snprintf(inside, sizeof inside, "%s/tokenizer.json", path);
        if ((f = codi__file_open(inside, e2, sizeof e2)) != NULL) path = inside;
    }
    if (!f) return NULL;
    while (i < f->size && (f->data[i] == ' ' || f->data[i] == '\n' || f->data[i] == '\r' || f->data[i] == '\t')) i++;
    if (i < f->size && f->data[i] == '{') t = codi__tok_load_json(path, (const char *)f->data, f->size, err, errsz);
    else t = codi__tok_load_tiktoken(path, (const char *)f->data, f->size, err, errsz);
    codi__file_close(f);
    if (!t) return NULL;
    /* BOS: the template's first token, else tokenizer_config.json's bos_token beside the file, else <|begin_of_text|> */
    {
        codi__tok_internal *ti = (codi__tok_internal *)t->internal;
        const char *slash = strrchr(path, '/');
        char *cfg;
        if (ti->n_prefix) t->bos_id = ti->prefix[0];
        snprintf(buf, sizeof buf, "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
        if (t->bos_id < 0 && (cfg = codi_read_text(buf, &i)) != NULL) {
            char e2[64];
            codi_json *root = codi_json_parse(cfg, i, e2, sizeof e2);
            const char *bos = codi__json_token_str(codi_json_get(root, "bos_token"));
            if (bos) t->bos_id = codi_token_id(t, bos, strlen(bos));
            codi_json_free(root);
            CODI_FREE(cfg);
        }
        if (t->bos_id < 0) t->bos_id = codi_token_id(t, "<|begin_of_text|>", 17);
        for (i = 0; i < (size_t)(ti->n_prefix + ti->n_suffix); i++) {
            int id = i < (size_t)ti->n_prefix ? ti->prefix[i] : ti->suffix[i - (size_t)ti->n_prefix];
            if (id < 0 || id >= t->n_ids) { codi__err(err, errsz, "%s: post-processor id %d out of range", path, id); codi_tokenizer_free(t); return NULL; }
        }
    }
    return t;
}

/* Length of the piece that starts s[0..n), n > 0, under Llama 3's split regex
       (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
   with the first alternative that matches taken, as a backtracking regex engine does. */
static size_t codi__llama3_piece(const unsigned char *s, size_t n) {
    uint32_t c0, c1 = 0xFFFFFFFFu, cp;
    size_t l0 = (size_t)codi__utf8_next(s, n, &c0), i, last_start, last_nl;
    int k0 = codi__char_class(c0), k1 = -1, chars;
    if (l0 < n) { codi__utf8_next(s + l0, n - l0, &c1); k1 = codi__char_class(c1); }
    /* 1: 's 't 're 've 'm 'll 'd, any case (U+017F long s folds to s) */
    if (c0 == '\'' && n > 1) {
        int a = s[1] | 0x20, b = n > 2 ? s[2] | 0x20 : 0;
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
        if (s[1] == 0xC5 && n > 2 && s[2] == 0xBF) return 3;
        if (((a == 'r' || a == 'v') && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    /* 2: letters, after at most one character that is no letter, digit, \r or \n */
    if (k0 == CODI__CH_LETTER || (k1 == CODI__CH_LETTER && k0 != CODI__CH_NUMBER && c0 != '\r' && c0 != '\n')) {
        for (i = k0 == CODI__CH_LETTER ? 0 : l0; i < n;) {
            size_t l = (size_t)codi__utf8_next(s + i, n - i, &cp);
            if (codi__char_class(cp) != CODI__CH_LETTER) break;
            i += l;
        }
        return i;
    }
    /* 3: one to three digits */
    if (k0 == CODI__CH_NUMBER) {
        for (i = 0, chars = 0; i < n && chars < 3; chars++) {
            size_t l = (size_t)codi__utf8_next(s + i, n - i, &cp);
            if (codi__char_class(cp) != CODI__CH_NUMBER) break;
            i += l;
        }
        return i;
    }
    /* 4: an optional space, symbols, then any \r and \n */
    if (k0 == CODI__CH_OTHER || (c0 == ' ' && k1 == CODI__CH_OTHER)) {
        for (i = k0 == CODI__CH_OTHER ? 0 : 1; i < n;) {
            size_t l = (size_t)codi__utf8_next(s + i, n - i, &cp);
            if (codi__char_class(cp) != CODI__CH_OTHER) break;
            i += l;
        }
        while (i < n && (s[i] == '\r' || s[i] == '\n')) i++;
        return i;
    }
    /* 5-7: a run of whitespace */
    for (i = 0, last_start = 0, last_nl = 0, chars = 0; i < n; chars++) {
        size_t l = (size_t)codi__utf8_next(s + i, n - i, &cp);
        if (codi__char_class(cp) != CODI__CH_SPACE) break;
        if (cp == '\r' || cp == '\n') last_nl = i + 1;
        last_start = i;
        i += l;
    }
    if (last_nl) return last_nl;                 /* \s*[\r\n]+ ends at the run's last newline */
    if (i == n || chars == 1) return i;          /* \s+(?!\S) at the end, or \s+ */
    return last_start;                           /* \s+(?!\S): the last space goes with what follows */
}

/* Growable id list and the scratch of one encode call. */
struct codi__heap_item { int32_t rank, pos; };      /* a candidate merge of symbol pos and the next */
typedef struct {
    int32_t *ids; int n, cap;
    int32_t *sym, *prev, *next; int cap_sym;        /* BPE symbols of the current piece */
    struct codi__heap_item *heap; int n_heap;
    int oom;
} codi__enc;

static void codi__enc_push(codi__enc *e, int32_t id) {
    if (e->n == e->cap) {
        int cap = e->cap ? e->cap * 2 : 256;
        int32_t *ni = (int32_t *)CODI_REALLOC(e->ids, (size_t)cap * sizeof(int32_t));
        if (!ni) { e->oom = 1; return; }
        e->ids = ni; e->cap = cap;
    }
    e->ids[e->n++] = id;
}

static int codi__heap_less(const struct codi__heap_item *a, const struct codi__heap_item *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);   /* lowest rank, then leftmost */
}

static void codi__heap_push(codi__enc *e, int32_t rank, int32_t pos) {
    int i = e->n_heap++;
    struct codi__heap_item x;
    x.rank = rank; x.pos = pos;
    while (i > 0 && codi__heap_less(&x, &e->heap[(i - 1) / 2])) { e->heap[i] = e->heap[(i - 1) / 2]; i = (i - 1) / 2; }
    e->heap[i] = x;
}

static struct codi__heap_item codi__heap_pop(codi__enc *e) {
    struct codi__heap_item top = e->heap[0], x = e->heap[--e->n_heap];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= e->n_heap) break;
        if (c + 1 < e->n_heap && codi__heap_less(&e->heap[c + 1], &e->heap[c])) c++;
        if (!codi__heap_less(&e->heap[c], &x)) break;
        e->heap[i] = e->heap[c]; i = c;
    }
    if (e->n_heap) e->heap[i] = x;
    return top;
}

/* Byte-level BPE of one piece: start from its bytes' tokens, then repeatedly merge the
   adjacent pair of lowest rank (leftmost on ties), as Hugging Face's BPE and tiktoken do.
   A heap of candidate pairs keeps long pieces O(n log n); stale entries are skipped. */
static void codi__bpe(const codi_tokenizer *t, codi__enc *e, const unsigned char *p, int n) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    int i, first = -1, last = -1;
    int32_t rank, id, unused;
    if (n == 0) return;
    if (ti->ignore_merges || n == 1) {
        int whole = codi__vocab_find(t, p, (size_t)n);
        if (whole >= 0) { codi__enc_push(e, whole); return; }
    }
    if (n > e->cap_sym) {
        int cap = n > 2 * e->cap_sym ? n : 2 * e->cap_sym;
        CODI_FREE(e->sym); CODI_FREE(e->heap);
        e->sym = (int32_t *)CODI_MALLOC((size_t)cap * 3 * sizeof(int32_t));
        e->heap = (struct codi__heap_item *)CODI_MALLOC((size_t)cap * 3 * sizeof *e->heap);
        if (!e->sym || !e->heap) { e->oom = 1; CODI_FREE(e->sym); CODI_FREE(e->heap); e->sym = NULL; e->heap = NULL; e->cap_sym = 0; return; }
        e->prev = e->sym + cap; e->next = e->sym + 2 * cap; e->cap_sym = cap;
    }
    /* symbols: one per byte that has a token (as HF, a byte without one is dropped), linked */
    for (i = 0; i < n; i++) {
        e->sym[i] = ti->byte_id[p[i]];
        e->prev[i] = e->next[i] = -1;
        if (e->sym[i] < 0) continue;
        if (last >= 0) e->next[last] = i; else first = i;
        e->prev[i] = last; last = i;
    }
    e->n_heap = 0;
    for (i = first; i >= 0 && e->next[i] >= 0; i = e->next[i])
        if (codi__merge_find(t, e->sym[i], e->sym[e->next[i]], &rank, &id)) codi__heap_push(e, rank, i);
    while (e->n_heap) {
        struct codi__heap_item m = codi__heap_pop(e);
        int a = m.pos, b = e->next[a];
        if (e->sym[a] < 0 || b < 0 || !codi__merge_find(t, e->sym[a], e->sym[b], &rank, &id) || rank != m.rank) continue;
        e->sym[a] = id;                               /* b joins a */
        e->sym[b] = -1;
        e->next[a] = e->next[b];
        if (e->next[b] >= 0) e->prev[e->next[b]] = a;
        if (e->prev[a] >= 0 && codi__merge_find(t, e->sym[e->prev[a]], id, &rank, &unused)) codi__heap_push(e, rank, e->prev[a]);
        if (e->next[a] >= 0 && codi__merge_find(t, id, e->sym[e->next[a]], &rank, &unused)) codi__heap_push(e, rank, a);
    }
    for (i = first; i >= 0; i = e->next[i]) codi__enc_push(e, e->sym[i]);
}

/* Plain text (no added tokens in it): pre-tokenize into pieces, BPE each. */
static void codi__encode_plain(const codi_tokenizer *t, codi__enc *e, const unsigned char *s, size_t n) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    unsigned char *tmp = NULL;
    size_t i = 0;
    if (n && ti->add_prefix_space && !(tmp = (unsigned char *)CODI_MALLOC(n + 1))) { e->oom = 1; return; }
    while (i < n && !e->oom) {
        size_t l = codi__llama3_piece(s + i, n - i);
        if (tmp && s[i] != ' ') {     /* ByteLevel(add_prefix_space) runs after the Split: a space before each piece */
            tmp[0] = ' '; memcpy(tmp + 1, s + i, l);
            codi__bpe(t, e, tmp, (int)l + 1);
        } else codi__bpe(t, e, s + i, (int)l);
        i += l;
    }
    CODI_FREE(tmp);
}

static int codi__is_word_char(uint32_t cp) {     /* Rust's is_alphanumeric, or '_' */
    int k = codi__char_class(cp);
    return cp == '_' || k == CODI__CH_LETTER || k == CODI__CH_NUMBER;
}

/* The character that ends at s[end] (start >= lo): its length, and *cp; 0 at lo. */
static size_t codi__char_before(const unsigned char *s, size_t lo, size_t end, uint32_t *cp) {
    size_t l = 1;
    if (end <= lo) return 0;
    while (l < 4 && end - l > lo && (s[end - l] & 0xC0) == 0x80) l++;
    if ((size_t)codi__utf8_next(s + end - l, l, cp) != l) { l = 1; *cp = 0xFFFFFFFFu; }
    return l;
}

/* The next added token in s[from..n) as Hugging Face's AddedVocabulary finds it: among the
   tokens with this normalized flag, the leftmost-longest match, matches never overlapping; one
   that is then dropped (special while !parse_special, single_word next to a word character) is
   skipped whole, as HF's find_iter goes on after it. lo: the start of the text HF searches
   (single_word looks no further back). Its index in added and span [*ms, *me) with the stripped
   whitespace; -1 if none. */
static int codi__added_match(const codi_tokenizer *t, const unsigned char *s, size_t lo, size_t from, size_t n,
                             int parse_special, int normalized, size_t *ms, size_t *me) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    size_t i = from;
    while (i < n) {
        int k, hit = -1;
        size_t len = 0, b, e2, l;
        uint32_t cp = 0;
        const codi__added *a;
        for (k = ti->added_from[s[i]]; k < ti->added_from[s[i] + 1]; k++) {    /* longest first */
            a = &ti->added[k];
            len = a->len;
            if (a->normalized == normalized && len <= n - i && !memcmp(s + i, CODI__ADDED_TEXT(ti, a), len)) { hit = k; break; }
        }
        if (hit < 0) { i++; continue; }
        a = &ti->added[hit]; b = i; e2 = i + len;
        if ((a->special && !parse_special) ||
            (a->single_word && ((codi__char_before(s, lo, i, &cp) && codi__is_word_char(cp)) ||
                                (e2 < n && (codi__utf8_next(s + e2, n - e2, &cp), codi__is_word_char(cp)))))) {
            i = e2;
            continue;
        }
        if (a->lstrip)                        /* take in the whitespace before and after */
            while ((l = codi__char_before(s, from, b, &cp)) != 0 && codi__char_class(cp) == CODI__CH_SPACE) b -= l;
        if (a->rstrip)
            while (e2 < n && (l = (size_t)codi__utf8_next(s + e2, n - e2, &cp), codi__char_class(cp) == CODI__CH_SPACE)) e2 += l;
        *ms = b; *me = e2;
        return hit;
    }
    return -1;
}

/* Text between two normalized=false added tokens: the normalized=true ones in it, the rest plain. */
static void codi__encode_gap(const codi_tokenizer *t, codi__enc *e, const unsigned char *s, size_t pos, size_t end,
                             int parse_special) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    size_t lo = pos;
    if (!ti->n_normalized) { codi__encode_plain(t, e, s + pos, end - pos); return; }
    while (pos < end && !e->oom) {
        size_t ms = end, me = end;
        int k = codi__added_match(t, s, lo, pos, end, parse_special, 1, &ms, &me);
        codi__encode_plain(t, e, s + pos, ms - pos);
        if (k >= 0) codi__enc_push(e, ti->added[k].id);
        pos = me;
    }
}

CODI_API int codi_encode(const codi_tokenizer *t, const char *text, size_t len, int add_bos, int parse_special,
                         int32_t *ids, int cap) {
    const codi__tok_internal *ti = (const codi__tok_internal *)t->internal;
    const unsigned char *s = (const unsigned char *)text;
    codi__enc e;
    size_t pos = 0;
    int i, n;
    memset(&e, 0, sizeof e);
    if (add_bos) {
        if (ti->has_template) for (i = 0; i < ti->n_prefix; i++) codi__enc_push(&e, ti->prefix[i]);
        else if (t->bos_id >= 0) codi__enc_push(&e, t->bos_id);
        else return -1;
    }
    while (pos < len && !e.oom) {
        size_t ms = len, me = len;
        int k = codi__added_match(t, s, 0, pos, len, parse_special, 0, &ms, &me);
        codi__encode_gap(t, &e, s, pos, ms, parse_special);
        if (k >= 0) codi__enc_push(&e, ti->added[k].id);
        pos = me;
    }
    if (add_bos && ti->has_template) for (i = 0; i < ti->n_suffix; i++) codi__enc_push(&e, ti->suffix[i]);
    n = e.oom ? -1 : e.n;
    if (n > 0 && ids && cap > 0) memcpy(ids, e.ids, (size_t)(n < cap ? n : cap) * sizeof(int32_t));
    CODI_FREE(e.ids); CODI_FREE(e.sym); CODI_FREE(e.heap);
    return n;
}

CODI_API long codi_decode(const codi_tokenizer *t, const int32_t *ids, int n, int skip_special, char *out, size_t cap) {
    codi_utf8_state st;
    codi__sink k;
    int i;
    memset(&st, 0, sizeof st);
    k.p = out; k.cap = out ? cap : 0; k.n = 0;
    for (i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids) { codi__sink_end(&k); return -1; }
        if (skip_special && t->kind[ids[i]] == CODI_TOK_SPECIAL) continue;
        codi__utf8_feed(&st, (const unsigned char *)t->bytes + t->offset[ids[i]], t->length[ids[i]], &k);
    }
    codi__utf8_flush(&st, &k);
    codi__sink_end(&k);
    return (long)k.n;
}

CODI_API int codi_decode_stream(const codi_tokenizer *t, codi_utf8_state *st, int32_t id, int skip_special, char *out, size_t cap) {
    codi__sink k;
    if (id >= t->n_ids || cap < CODI_STREAM_BYTES(t)) return -1;
    k.p = out; k.cap = cap; k.n = 0;
    if (id < 0) codi__utf8_flush(st, &k);
    else if (!(skip_special && t->kind[id] == CODI_TOK_SPECIAL))
        codi__utf8_feed(st, (const unsigned char *)t->bytes + t->offset[id], t->length[id], &k);
    codi__sink_end(&k);
    return (int)k.n;
}

CODI_API long codi_token_text(const codi_tokenizer *t, int32_t id, char *out, size_t cap) {
    const unsigned char *p;
    size_t i = 0, n;
    codi__sink k;
    k.p = out; k.cap = out ? cap : 0; k.n = 0;
    if (id < 0 || id >= t->n_ids) { codi__sink_end(&k); return -1; }
    p = (const unsigned char *)t->bytes + t->offset[id]; n = t->length[id];
    while (i < n) {
        uint32_t cp;
        int l = codi__utf8_next(p + i, n - i, &cp);
        char esc[8];
        if (cp == '\n' || cp == '\t' || cp == '\r' || cp == '\\') {
            esc[0] = '\\'; esc[1] = cp == '\n' ? 'n' : cp == '\t' ? 't' : cp == '\r' ? 'r' : '\\';
            codi__sink_put(&k, esc, 2);
        } else if (cp == 0xFFFFFFFFu || cp < 0x20 || cp == 0x7F) {
            snprintf(esc, sizeof esc, "\\x%02X", p[i]);
            codi__sink_put(&k, esc, 4);
        } else codi__sink_put(&k, p + i, (size_t)l);
        i += (size_t)l;
    }
    codi__sink_end(&k);
    return (long)k.n;
}

static int codi__py_space(uint32_t cp) {     /* Python's str.isspace: White_Space and U+001C..U+001F */
    return (cp >= 0x1C && cp <= 0x1F) || codi__char_class(cp) == CODI__CH_SPACE;
}

CODI_API long codi_normalize_question(const char *q, char *out, size_t cap) {
    const unsigned char *s = (const unsigned char *)q;
    size_t n = strlen(q), a = 0, b = n, i;
    codi__sink k;
    k.p = out; k.cap = out ? cap : 0; k.n = 0;
    while (a < b) {                               /* strip the front */
        uint32_t cp;
        int l = codi__utf8_next(s + a, b - a, &cp);
        if (!codi__py_space(cp)) break;
        a += (size_t)l;
    }
    while (b > a) {                               /* and the back */
        size_t l = 1;
        uint32_t cp;
        while (l < 4 && b - l > a && (s[b - l] & 0xC0) == 0x80) l++;
        if ((size_t)codi__utf8_next(s + b - l, l, &cp) != l || !codi__py_space(cp)) break;
        b -= l;
    }
    for (i = a; i < b; i++) {
        if (s[i] == ' ' && i + 1 < b && s[i + 1] == ' ') i++;   /* "  " -> " ", left to right */
        codi__sink_put(&k, s + i, 1);
    }
    codi__sink_end(&k);
    return (long)k.n;
}

CODI_API int codi_tokenizer_add_codi_tokens(const codi_model *m, codi_tokenizer *t, char *err, size_t errsz) {
    const int ids[3] = { m->config.pad_id, m->config.bot_id, m->config.eot_id };
    static const char *names[3] = { "[PAD]", "<|bocot|>", "<|eocot|>" };
    int i;
    for (i = 0; i < 3; i++)
        if (ids[i] >= 0 && ids[i] < m->config.vocab && (ids[i] >= t->n_ids || t->kind[ids[i]] == CODI_TOK_NONE) && codi_tokenizer_add_token(t, names[i], ids[i], 1, err, errsz) < 0)
            return -1;
    return 0;
}

CODI_API int codi_prompt_from_text(const codi_model *m, const codi_tokenizer *t, const char *question, int recipe,
                                   int32_t *out, int cap) {
    return codi_prompt_from_text_ex(m, t, question, recipe, 0, out, cap);
}

CODI_API int codi_prompt_from_text_ex(const codi_model *m, const codi_tokenizer *t, const char *question, int recipe,
                                      int parse_special, int32_t *out, int cap) {
    long len = codi_normalize_question(question, NULL, 0);
    char *q = (char *)CODI_MALLOC((size_t)len + 1);
    int32_t *ids;
    int n, r;
    if (!q) return -1;
    codi_normalize_question(question, q, (size_t)len + 1);
    n = codi_encode(t, q, (size_t)len, 0, parse_special, NULL, 0);
    ids = n < 0 ? NULL : (int32_t *)CODI_MALLOC((size_t)n * sizeof(int32_t) + 1);
    if (!ids) { CODI_FREE(q); return -1; }
    codi_encode(t, q, (size_t)len, 0, parse_special, ids, n);
    r = codi_prompt_ids(m, recipe, ids, n, out, cap);
    CODI_FREE(ids); CODI_FREE(q);
    return r;
}

/* >>lens: distributions over the vocabulary, the logit lens, the tuned lens ------------------- */

CODI_API double codi_log_softmax(const float *logits, int n, float *logp) {
    float mx = logits[0];
    double sum = 0, lse;
    int i;
    for (i = 1; i < n; i++) if (logits[i] > mx) mx = logits[i];
    for (i = 0; i < n; i++) sum += exp((double)logits[i] - mx);
    lse = mx + log(sum);
    if (logp) for (i = 0; i < n; i++) logp[i] = (float)(logits[i] - lse);
    return lse;
}

CODI_API void codi_softmax(const float *logits, int n, float *probs) {
    double lse = codi_log_softmax(logits, n, NULL);
    int i;
    for (i = 0; i < n; i++) probs[i] = (float)exp(logits[i] - lse);
}

CODI_API double codi_entropy(const float *logits, int n) {
    double lse = codi_log_softmax(logits, n, NULL), h = 0;
    int i;
    for (i = 0; i < n; i++) { double lp = logits[i] - lse; h -= exp(lp) * lp; }
    return h;
}

CODI_API double codi_kl(const float *p_logits, const float *q_logits, int n) {
    double lp = codi_log_softmax(p_logits, n, NULL), lq = codi_log_softmax(q_logits, n, NULL), kl = 0;
    int i;
    for (i = 0; i < n; i++) {
        double a = p_logits[i] - lp;
        kl += exp(a) * (a - (q_logits[i] - lq));
    }
    return kl;
}

/* The order of codi_top_k: higher logit first, then lower id. */
static int codi__ranks_before(const float *logits, int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

CODI_API int codi_top_k(const float *logits, int n, int k, int32_t *ids, float *probs) {
    int i, j, have = 0;
    if (k > n) k = n;
    if (k <= 0) return 0;
    for (i = 0; i < n; i++) {                       /* insertion into the sorted best-k list */
        if (have == k && !codi__ranks_before(logits, i, ids[k - 1])) continue;
        j = have < k ? have++ : k - 1;
        while (j > 0 && codi__ranks_before(logits, i, ids[j - 1])) { ids[j] = ids[j - 1]; j--; }
        ids[j] = i;
    }
    if (probs) {
        double lse = codi_log_softmax(logits, n, NULL);
        for (i = 0; i < k; i++) probs[i] = (float)exp(logits[ids[i]] - lse);
    }
    return k;
}

CODI_API int codi_rank_of(const float *logits, int n, int32_t id, float *prob) {
    int i, rank = 0;
    if (id < 0 || id >= n) return -1;
    for (i = 0; i < n; i++) rank += codi__ranks_before(logits, i, id);
    if (prob) *prob = (float)exp(logits[id] - codi_log_softmax(logits, n, NULL));
    return rank;
}

CODI_API int codi_number_tokens(const codi_tokenizer *t, double value, int32_t ids[2]) {
    char digits[32], spaced[40];
    int n = 0, id;
    if (!(value >= 0 && value < 1e15) || value != floor(value)) return -1;
    snprintf(digits, sizeof digits, "%.0f", value);
    digits[strlen(digits) > 3 ? 3 : strlen(digits)] = 0;  /* the leading group of up to three digits */
    snprintf(spaced, sizeof spaced, " %s", digits);
    if ((id = codi_token_id(t, digits, strlen(digits))) < 0 &&     /* not one token: the first of its encoding */
        codi_encode(t, digits, strlen(digits), 0, 0, ids, 1) >= 1) id = ids[0];
    if (id >= 0) ids[n++] = id;
    if ((id = codi_token_id(t, spaced, strlen(spaced))) >= 0) ids[n++] = id;
    return n;
}

/* logits [V] = lm_head(final_norm(x [D])) on the active kernel path; buf [2D] scratch (one
   position needs at most D floats of matmul work: x as bf16 hi and lo). */
static void codi__unembed(const codi_model *m, const float *x, float *logits, float *buf) {
    const codi_config *c = &m->config;
    codi_rmsnorm(buf, x, m->w.final_norm, c->dim, c->norm_eps);
    codi__matmul_range(codi__kernel_active(), logits, 0, buf, &m->w.lm_head, 1, 0, c->vocab, buf + c->dim);
}

CODI_API int codi_lens_logits(const codi_model *m, const float *resid, float *logits) {
    float *buf = (float *)CODI_MALLOC((size_t)m->config.dim * 2 * sizeof(float));
    if (!buf) return -1;
    codi__unembed(m, resid, logits, buf);
    CODI_FREE(buf);
    return 0;
}

CODI_API int codi_lens_at(const codi_model *m, codi_state *s, int layer, int pos, float *logits) {
    if (layer < 0 || layer > m->config.n_layers || pos < 0 || pos >= s->n_pos) {
        codi__err(s->error, sizeof s->error, "lens at layer %d, position %d: out of range (layers 0..%d, positions 0..%d)",
                  layer, pos, m->config.n_layers, s->n_pos - 1);
        return -1;
    }
    if (codi_lens_logits(m, codi_state_resid(s, layer, pos), logits)) { codi__err(s->error, sizeof s->error, "out of memory"); return -1; }
    return 0;
}

#ifndef CODI_NO_RESEARCH   /* to the end of >>lenstrain */

CODI_API codi_tuned_lens *codi_tuned_lens_new(const codi_model *m) {
    size_t L = (size_t)m->config.n_layers, D = (size_t)m->config.dim;
    codi_tuned_lens *t = (codi_tuned_lens *)CODI_MALLOC(sizeof *t);
    if (!t) return NULL;
    t->n_layers = (int)L; t->dim = (int)D;
    t->weight = (float *)CODI_MALLOC(L * D * D * sizeof(float));
    t->bias = (float *)CODI_MALLOC(L * D * sizeof(float));
    if (!t->weight || !t->bias) { codi_tuned_lens_free(t); return NULL; }
    memset(t->weight, 0, L * D * D * sizeof(float));
    memset(t->bias, 0, L * D * sizeof(float));
    return t;
}

CODI_API void codi_tuned_lens_free(codi_tuned_lens *t) {
    if (!t) return;
    CODI_FREE(t->weight); CODI_FREE(t->bias); CODI_FREE(t);
}

/* x [D] = h + W_l h + b_l. With zero W_l and b_l, x equals h bit for bit. */
static void codi__translate(const codi_tuned_lens *t, int layer, const float *h, float *x) {
    int i, D = t->dim;
    const float *w = t->weight + (size_t)layer * D * D, *b = t->bias + (size_t)layer * D;
    for (i = 0; i < D; i++) x[i] = h[i] + (codi__dot(w + (size_t)i * D, h, D) + b[i]);
}

CODI_API int codi_tuned_lens_logits(const codi_model *m, const codi_tuned_lens *t, int layer, const float *resid,
                                    float *logits, char *err, size_t errsz) {
    const codi_config *c = &m->config;
    float *buf;
    if (layer < 0 || layer > c->n_layers) { codi__err(err, errsz, "lens layer %d out of range 0..%d", layer, c->n_layers); return -1; }
    if (t && (t->n_layers != c->n_layers || t->dim != c->dim)) {
        codi__err(err, errsz, "tuned lens has %d layers x dim %d; the model has %d x %d", t->n_layers, t->dim, c->n_layers, c->dim);
        return -1;
    }
    if (!(buf = (float *)CODI_MALLOC((size_t)c->dim * 3 * sizeof(float)))) { codi__err(err, errsz, "out of memory"); return -1; }
    if (t && layer < c->n_layers) {
        codi__translate(t, layer, resid, buf + 2 * c->dim);
        resid = buf + 2 * c->dim;
    }
    codi__unembed(m, resid, logits, buf);
    CODI_FREE(buf);
    if (!codi__all_finite(logits, c->vocab)) { codi__err(err, errsz, "lens layer %d: logits are not finite (NaN or Inf)", layer); return -1; }
    return 0;
}

/* KL(softmax(target) || softmax(z)) over V; z [V] is overwritten by scale * dKL/dz = scale * (q - p). */
static double codi__lens_kl_dz(float *z, const float *target, int V, float scale) {
    double lse_q = codi_log_softmax(z, V, NULL), lse_p = codi_log_softmax(target, V, NULL), kl = 0;
    int v;
    for (v = 0; v < V; v++) {
        double lp = target[v] - lse_p, lq = z[v] - lse_q, p = exp(lp);
        kl += p * (lp - lq);
        z[v] = (float)((exp(lq) - p) * scale);
    }
    return kl;
}

/* dx [D] = d(final_norm(x))/dx^T dy for HF's RMSNorm y = w * x / sqrt(mean(x^2) + eps). */
static void codi__rmsnorm_backward(float *dx, const float *x, const float *dy, const float *w, int D, float eps) {
    double ss = 0, xg = 0;
    float r;
    int i;
    for (i = 0; i < D; i++) ss += (double)x[i] * x[i];
    r = 1.0f / sqrtf((float)(ss / D) + eps);
    for (i = 0; i < D; i++) xg += (double)x[i] * w[i] * dy[i];
    for (i = 0; i < D; i++) dx[i] = (float)(r * w[i] * dy[i] - x[i] * ((double)r * r * r * xg / D));
}

/* One position through one translator and the unembedding, backwards: returns
   KL(softmax(target) || softmax(lens(x))) for x [D] (already translated) and, when dx is not
   NULL, dx [D] = scale * dKL/dx. work [V + 3D] scratch. The batch engine below does the same
   for many positions at once. */
static double codi__lens_kl_dx(const codi_model *m, const float *x, const float *target, float scale, float *dx, float *work) {
    const codi_config *c = &m->config;
    int D = c->dim, V = c->vocab, i, v;
    float *z = work, *y = work + V, *dy = y + D, *row = dy + D;
    double kl;
    codi__unembed(m, x, z, y);
    kl = codi__lens_kl_dz(z, target, V, scale);
    if (!dx) return kl;
    for (i = 0; i < D; i++) dy[i] = 0;
    for (v = 0; v < V; v++) {                         /* dy = U^T dz */
        const float *u = codi__matrix_row(&m->w.lm_head, v, row);
        float g = z[v];
        for (i = 0; i < D; i++) dy[i] += g * u[i];
    }
    codi__rmsnorm_backward(dx, x, dy, m->w.final_norm, D, c->norm_eps);
    return kl;
}

CODI_API double codi_tuned_lens_kl_grad(const codi_model *m, const codi_tuned_lens *t, int layer, int n,
                                        const float *resid, const float *target_logits, float *grad_w, float *grad_b) {
    const codi_config *c = &m->config;
    int D = c->dim, V = c->vocab, b, i, j;
    float *work, *x, *dx;
    double loss = 0;
    if (layer < 0 || layer >= c->n_layers || n <= 0 || t->n_layers != c->n_layers || t->dim != D) return NAN;
    if (!(work = (float *)CODI_MALLOC(((size_t)V + 5 * (size_t)D) * sizeof(float)))) return NAN;
    x = work + V + 3 * D; dx = x + D;
    if (grad_w) memset(grad_w, 0, (size_t)D * D * sizeof(float));
    if (grad_b) memset(grad_b, 0, (size_t)D * sizeof(float));
    for (b = 0; b < n; b++) {
        const float *h = resid + (size_t)b * D;
        codi__translate(t, layer, h, x);
        loss += codi__lens_kl_dx(m, x, target_logits + (size_t)b * V, 1.0f / n, (grad_w || grad_b) ? dx : NULL, work);
        for (i = 0; i < D && (grad_w || grad_b); i++) {
            if (grad_b) grad_b[i] += dx[i];
            if (grad_w) for (j = 0; j < D; j++) grad_w[(size_t)i * D + j] += dx[i] * h[j];
        }
    }
    CODI_FREE(work);
    return loss / n;
}

/* A batch of samples worked on in parallel. Its (layer, sample) items go through the unembedding
   CODI__LENS_CHUNK at a time, so each chunk reads lm_head once forward and once backward (the
   cost at 1B is streaming that matrix). Rows of lm_head are split into CODI__LENS_BLOCKS fixed
   blocks and every partial sum has its own slot, summed in a fixed order: the results do not
   depend on the thread count. */
#define CODI__LENS_CHUNK 32
#define CODI__LENS_BLOCKS 64
typedef struct {
    const codi_model *m; const codi_tuned_lens *t;
    int cap;                 /* B: samples the buffers hold */
    int n;                   /* samples in the current batch */
    float *resid;            /* [B, L+1, D] */
    float *target;           /* [B, V] */
    unsigned char *given;    /* [B] 1: the sample function gave the target */
    double *loss;            /* [L, B] */
    float *dx;               /* [L, B, D] scaled dLoss/dx, or NULL (evaluation) */
    float scale;             /* 1 / n */
    /* the current chunk of rows through the unembedding */
    int rows, item0;         /* rows in the chunk; its first (layer, sample) item */
    float *x;                /* [CHUNK, D] translated residuals */
    float *y;                /* [CHUNK, D] final-normed, later dy */
    float *z;                /* [CHUNK, V] logits, then scale * dKL/dz */
    float *out[CODI__LENS_CHUNK];  /* where row i's logits go (rows of z, or of target) */
    float *part;             /* [BLOCKS, CHUNK, D] per-block U^T dz */
    float *rowbuf;           /* [threads, D] bf16 rows as f32 */
    float *work;             /* [threads, work_stride] the product's scratch */
    size_t work_stride;      /* codi__work_floats(CHUNK, D) */
} codi__lens_batch;

static void codi__lens_batch_free(codi__lens_batch *lb) {
    CODI_FREE(lb->resid); CODI_FREE(lb->target); CODI_FREE(lb->given); CODI_FREE(lb->loss); CODI_FREE(lb->dx);
    CODI_FREE(lb->x); CODI_FREE(lb->y); CODI_FREE(lb->z); CODI_FREE(lb->part); CODI_FREE(lb->rowbuf); CODI_FREE(lb->work);
    memset(lb, 0, sizeof *lb);
}

static int codi__lens_batch_init(codi__lens_batch *lb, const codi_model *m, const codi_tuned_lens *t, int cap, int n_threads, int grads) {
    size_t L = (size_t)m->config.n_layers, D = (size_t)m->config.dim, V = (size_t)m->config.vocab, B = (size_t)cap, CH = CODI__LENS_CHUNK;
    memset(lb, 0, sizeof *lb);
    lb->m = m; lb->t = t; lb->cap = cap;
    lb->resid = (float *)CODI_MALLOC(B * (L + 1) * D * sizeof(float));
    lb->target = (float *)CODI_MALLOC(B * V * sizeof(float));
    lb->given = (unsigned char *)CODI_MALLOC(B);
    lb->loss = (double *)CODI_MALLOC(L * B * sizeof(double));
    lb->dx = grads ? (float *)CODI_MALLOC(L * B * D * sizeof(float)) : NULL;
    lb->x = (float *)CODI_MALLOC(CH * D * sizeof(float));
    lb->y = (float *)CODI_MALLOC(CH * D * sizeof(float));
    lb->z = (float *)CODI_MALLOC(CH * V * sizeof(float));
    lb->part = grads ? (float *)CODI_MALLOC(CODI__LENS_BLOCKS * CH * D * sizeof(float)) : NULL;
    lb->rowbuf = (float *)CODI_MALLOC((size_t)n_threads * D * sizeof(float));
    lb->work_stride = codi__work_floats(CODI__LENS_CHUNK, (int)D);
    lb->work = (float *)CODI_MALLOC((size_t)n_threads * lb->work_stride * sizeof(float));
    if (!lb->resid || !lb->target || !lb->given || !lb->loss || (grads && (!lb->dx || !lb->part)) || !lb->x || !lb->y || !lb->z || !lb->rowbuf || !lb->work) {
        codi__lens_batch_free(lb); return -1;
    }
    return 0;
}

/* Reads samples idx[0..n) through fn (serially: fn need not be thread-safe). */
static int codi__lens_batch_fill(codi__lens_batch *lb, codi_lens_sample_fn fn, void *user, const long *idx, int n, char *err, size_t errsz) {
    const codi_config *c = &lb->m->config;
    size_t D = (size_t)c->dim, V = (size_t)c->vocab;
    int b;
    for (b = 0; b < n; b++) {
        float *r = lb->resid + (size_t)b * (c->n_layers + 1) * D;
        int rc = fn(user, idx[b], r, lb->target + (size_t)b * V);
        if (rc != 0 && rc != 1) { codi__err(err, errsz, "sample %ld could not be read (code %d)", idx[b], rc); return -1; }
        if (!codi__all_finite(r, (int)((c->n_layers + (rc == 0)) * D))) {
            codi__err(err, errsz, "sample %ld has a residual that is not finite (NaN or Inf)", idx[b]); return -1;
        }
        lb->given[b] = (unsigned char)rc;
    }
    lb->n = n; lb->scale = 1.0f / (float)n;
    return 0;
}

/* out[i][r] = y_i . U_r for the chunk's rows i and the lm_head rows r of blocks [a, e): the
   kernel path's product into z, a block at a time (so no result depends on the thread count),
   copied on to the rows whose logits go elsewhere (targets). */
static void codi__lens_fwd_task(void *ctx, int tid, int a, int e) {
    codi__lens_batch *lb = (codi__lens_batch *)ctx;
    const codi_config *c = &lb->m->config;
    size_t V = (size_t)c->vocab;
    float *work = lb->work + (size_t)tid * lb->work_stride;
    int blk, i;
    for (blk = a; blk < e; blk++) {
        int r0 = (int)((long)c->vocab * blk / CODI__LENS_BLOCKS), r1 = (int)((long)c->vocab * (blk + 1) / CODI__LENS_BLOCKS);
        codi__matmul_range(codi__kernel_active(), lb->z, V, lb->y, &lb->m->w.lm_head, lb->rows, r0, r1, work);
        for (i = 0; i < lb->rows; i++)
            if (lb->out[i] != lb->z + (size_t)i * V) memcpy(lb->out[i] + r0, lb->z + (size_t)i * V + r0, (size_t)(r1 - r0) * sizeof(float));
    }
}

/* part[blk][i] = sum over the block's rows r of dz[i][r] U_r. */
static void codi__lens_bwd_task(void *ctx, int tid, int a, int e) {
    codi__lens_batch *lb = (codi__lens_batch *)ctx;
    const codi_config *c = &lb->m->config;
    const codi__kernel *kn = codi__kernel_active();
    size_t D = (size_t)c->dim, V = (size_t)c->vocab;
    int blk, r, i;
    for (blk = a; blk < e; blk++) {
        float *part = lb->part + (size_t)blk * CODI__LENS_CHUNK * D;
        memset(part, 0, (size_t)lb->rows * D * sizeof(float));
        for (r = (int)((long)c->vocab * blk / CODI__LENS_BLOCKS); r < (int)((long)c->vocab * (blk + 1) / CODI__LENS_BLOCKS); r++) {
            const float *u = codi__matrix_row(&lb->m->w.lm_head, r, lb->rowbuf + (size_t)tid * D);
            for (i = 0; i < lb->rows; i++) kn->axpy(part + (size_t)i * D, lb->z[(size_t)i * V + r], u, (int)D);
        }
    }
}

/* The chunk's items: translate and norm (stage 0), KL and dz (1), the block partials summed in
   order and the RMSNorm backward into dx (2). */
typedef struct { codi__lens_batch *lb; int stage; } codi__lens_stage;
static void codi__lens_item_task(void *ctx, int tid, int a, int e) {
    codi__lens_stage *st = (codi__lens_stage *)ctx;
    codi__lens_batch *lb = st->lb;
    const codi_config *c = &lb->m->config;
    size_t D = (size_t)c->dim, V = (size_t)c->vocab, j;
    int i, k;
    (void)tid;
    for (i = a; i < e; i++) {
        int item = lb->item0 + i, l = item / lb->n, b = item % lb->n;
        float *x = lb->x + (size_t)i * D, *y = lb->y + (size_t)i * D;
        if (st->stage == 0) {
            const float *h = lb->resid + ((size_t)b * (c->n_layers + 1) + l) * D;
            if (lb->t) codi__translate(lb->t, l, h, x); else memcpy(x, h, D * sizeof(float));
            codi_rmsnorm(y, x, lb->m->w.final_norm, c->dim, c->norm_eps);
        } else if (st->stage == 1) {
            lb->loss[(size_t)l * lb->cap + b] = codi__lens_kl_dz(lb->z + (size_t)i * V, lb->target + (size_t)b * V, c->vocab, lb->scale);
        } else {
            for (j = 0; j < D; j++) y[j] = 0;             /* y now holds dy */
            for (k = 0; k < CODI__LENS_BLOCKS; k++) {
                const float *p = lb->part + ((size_t)k * CODI__LENS_CHUNK + i) * D;
                for (j = 0; j < D; j++) y[j] += p[j];
            }
            codi__rmsnorm_backward(lb->dx + ((size_t)l * lb->cap + b) * D, x, y, lb->m->w.final_norm, c->dim, c->norm_eps);
        }
    }
}

/* Targets of the samples the sample function did not give: lm_head(final_norm(resid[L])). */
static void codi__lens_targets(codi__lens_batch *lb, codi__pool *pool) {
    const codi_config *c = &lb->m->config;
    size_t D = (size_t)c->dim;
    int b;
    (void)pool;
    lb->rows = 0;
    for (b = 0; b <= lb->n; b++) {
        if (lb->rows && (lb->rows == CODI__LENS_CHUNK || b == lb->n)) { CODI__PARALLEL(pool, codi__lens_fwd_task, lb, CODI__LENS_BLOCKS); lb->rows = 0; }
        if (b == lb->n || lb->given[b]) continue;
        codi_rmsnorm(lb->y + (size_t)lb->rows * D, lb->resid + ((size_t)b * (c->n_layers + 1) + c->n_layers) * D, lb->m->w.final_norm, c->dim, c->norm_eps);
        lb->out[lb->rows++] = lb->target + (size_t)b * c->vocab;
    }
}

/* Targets and every (layer, sample) item of the filled batch; layer_loss [L] = mean KL. */
static void codi__lens_batch_run(codi__lens_batch *lb, codi__pool *pool, double *layer_loss) {
    int l, b, i, L = lb->m->config.n_layers, items = L * lb->n;
    codi__lens_stage st;
    (void)pool;
    codi__lens_targets(lb, pool);
    st.lb = lb;
    for (lb->item0 = 0; lb->item0 < items; lb->item0 += CODI__LENS_CHUNK) {
        lb->rows = items - lb->item0 < CODI__LENS_CHUNK ? items - lb->item0 : CODI__LENS_CHUNK;
        for (i = 0; i < lb->rows; i++) lb->out[i] = lb->z + (size_t)i * lb->m->config.vocab;
        st.stage = 0; CODI__PARALLEL(pool, codi__lens_item_task, &st, lb->rows);
        CODI__PARALLEL(pool, codi__lens_fwd_task, lb, CODI__LENS_BLOCKS);
        st.stage = 1; CODI__PARALLEL(pool, codi__lens_item_task, &st, lb->rows);
        if (!lb->dx) continue;
        CODI__PARALLEL(pool, codi__lens_bwd_task, lb, CODI__LENS_BLOCKS);
        st.stage = 2; CODI__PARALLEL(pool, codi__lens_item_task, &st, lb->rows);
    }
    for (l = 0; l < L; l++) {
        double s = 0;
        for (b = 0; b < lb->n; b++) s += lb->loss[(size_t)l * lb->cap + b];
        layer_loss[l] = s / lb->n;
    }
}

static codi__pool *codi__lens_pool(int n_threads) {
#ifdef CODI_THREADS
    if (n_threads > 1) return codi__pool_new(n_threads);
#endif
    (void)n_threads;
    return NULL;
}

static void codi__lens_pool_free(codi__pool *p) {
#ifdef CODI_THREADS
    codi__pool_free(p);
#endif
    (void)p;
}

static int codi__lens_threads(int n_threads) {
#ifdef CODI_THREADS
    return n_threads < 1 ? 1 : n_threads;
#else
    (void)n_threads;
    return 1;
#endif
}

CODI_API int codi_tuned_lens_eval(const codi_model *m, const codi_tuned_lens *t, codi_lens_sample_fn fn, void *user,
                                  long first, long count, int n_threads, double *kl, char *err, size_t errsz) {
    const codi_config *c = &m->config;
    enum { CHUNK = 32 };
    codi__lens_batch lb;
    codi__pool *pool = NULL;
    long done, idx[CHUNK];
    double part[512];
    int l, rc = -1;
    if (count <= 0 || first < 0 || c->n_layers > 512) { codi__err(err, errsz, "evaluation needs count > 0 and first >= 0"); return -1; }
    if (t && (t->n_layers != c->n_layers || t->dim != c->dim)) { codi__err(err, errsz, "tuned lens made for another model shape"); return -1; }
    n_threads = codi__lens_threads(n_threads);
    if (codi__lens_batch_init(&lb, m, t, CHUNK, n_threads, 0)) { codi__err(err, errsz, "out of memory"); return -1; }
    if (n_threads > 1 && !(pool = codi__lens_pool(n_threads))) { codi__err(err, errsz, "cannot start threads"); goto done; }
    for (l = 0; l < c->n_layers; l++) kl[l] = 0;
    for (done = 0; done < count; done += CHUNK) {
        int n = count - done < CHUNK ? (int)(count - done) : CHUNK, b;
        for (b = 0; b < n; b++) idx[b] = first + done + b;
        if (codi__lens_batch_fill(&lb, fn, user, idx, n, err, errsz)) goto done;
        codi__lens_batch_run(&lb, pool, part);
        for (l = 0; l < c->n_layers; l++) kl[l] += part[l] * n;
    }
    for (l = 0; l < c->n_layers; l++) kl[l] /= (double)count;
    rc = 0;
done:
    codi__lens_pool_free(pool);
    codi__lens_batch_free(&lb);
    return rc;
}

CODI_API int codi_tuned_lens_eval_each(const codi_model *m, const codi_tuned_lens *t, codi_lens_sample_fn fn, void *user,
                                       long first, long count, int n_threads, double *kl, char *err, size_t errsz) {
    const codi_config *c = &m->config;
    enum { CHUNK = 32 };
    codi__lens_batch lb;
    codi__pool *pool = NULL;
    long done, idx[CHUNK];
    double part[512];
    int l, rc = -1;
    if (count <= 0 || first < 0 || c->n_layers > 512) { codi__err(err, errsz, "evaluation needs count > 0 and first >= 0"); return -1; }
    if (t && (t->n_layers != c->n_layers || t->dim != c->dim)) { codi__err(err, errsz, "tuned lens made for another model shape"); return -1; }
    n_threads = codi__lens_threads(n_threads);
    if (codi__lens_batch_init(&lb, m, t, CHUNK, n_threads, 0)) { codi__err(err, errsz, "out of memory"); return -1; }
    if (n_threads > 1 && !(pool = codi__lens_pool(n_threads))) { codi__err(err, errsz, "cannot start threads"); goto done; }
    for (done = 0; done < count; done += CHUNK) {
        int n = count - done < CHUNK ? (int)(count - done) : CHUNK, b;
        for (b = 0; b < n; b++) idx[b] = first + done + b;
        if (codi__lens_batch_fill(&lb, fn, user, idx, n, err, errsz)) goto done;
        codi__lens_batch_run(&lb, pool, part);
        for (b = 0; b < n; b++) for (l = 0; l < c->n_layers; l++) kl[(size_t)(done + b) * c->n_layers + l] = lb.loss[(size_t)l * lb.cap + b];
    }
    rc = 0;
done:
    codi__lens_pool_free(pool);
    codi__lens_batch_free(&lb);
    return rc;
}

/* ======== PART III. RESEARCH: lens training, files, datasets, probes, statistics, PCA =========== */

/* >>lenstrain: the optimisers of both recipes over the batch engine above */

struct codi_lens_trainer {
    const codi_model *m;
    codi_tuned_lens *t;
    codi_lens_train_opts o;
    long n_samples, step;
    codi_lens_sample_fn fn; void *user;
    codi__lens_batch lb;
    codi__pool *pool;
    float *gw, *gb;          /* [L, D, D], [L, D] gradients of the current step */
    float *m1w, *m1b;        /* SGD momentum buffer or Adam exp_avg, same shapes */
    float *m2w, *m2b;        /* Adam exp_avg_sq (NULL for SGD) */
    double *row_sq;          /* [L, D] squared gradient norm of each row (W row + bias element) */
    long *perm;              /* [n_samples] sample order of epoch perm_epoch */
    long perm_epoch;
    double clip_coef, lr_now;
    char err[256];
};

CODI_API codi_lens_train_opts codi_lens_train_library(long total_steps, int batch) {
    codi_lens_train_opts o;
    memset(&o, 0, sizeof o);
    o.optimizer = CODI_LENS_SGD; o.momentum = 0.9; o.lr = 1.0 * (1 - o.momentum);
    o.weight_decay = 1e-3; o.clip_norm = 1.0; o.linear_decay = 1;
    o.total_steps = total_steps; o.batch = batch; o.seed = 42; o.n_threads = 1;
    o.beta2 = 0.999; o.eps = 1e-8;
    return o;
}

CODI_API codi_lens_train_opts codi_lens_train_sprint(long n_samples) {
    codi_lens_train_opts o;
    memset(&o, 0, sizeof o);
    o.optimizer = CODI_LENS_ADAM; o.lr = 1e-3; o.momentum = 0.9; o.beta2 = 0.999; o.eps = 1e-8;
    o.total_steps = 3 * n_samples; o.batch = 1; o.seed = 42; o.n_threads = 1;
    return o;
}

CODI_API void codi_lens_trainer_free(codi_lens_trainer *tr) {
    if (!tr) return;
    codi__lens_pool_free(tr->pool);
    codi__lens_batch_free(&tr->lb);
    CODI_FREE(tr->gw); CODI_FREE(tr->gb); CODI_FREE(tr->m1w); CODI_FREE(tr->m1b);
    CODI_FREE(tr->m2w); CODI_FREE(tr->m2b); CODI_FREE(tr->row_sq); CODI_FREE(tr->perm);
    CODI_FREE(tr);
}

CODI_API codi_lens_trainer *codi_lens_trainer_new(const codi_model *m, codi_tuned_lens *t, const codi_lens_train_opts *o,
                                                  long n_samples, codi_lens_sample_fn fn, void *user, char *err, size_t errsz) {
    const codi_config *c = &m->config;
    size_t L = (size_t)c->n_layers, D = (size_t)c->dim, nw = L * D * D, nb = L * D;
    codi_lens_trainer *tr;
    int threads = codi__lens_threads(o->n_threads);
    if (t->n_layers != c->n_layers || t->dim != c->dim) { codi__err(err, errsz, "tuned lens made for another model shape"); return NULL; }
    if (n_samples < 1 || o->batch < 1 || o->batch > 1 << 20 || o->total_steps < 1 || !(o->lr >= 0) ||
        !(o->momentum >= 0 && o->momentum < 1) || !(o->weight_decay >= 0) || !(o->clip_norm >= 0) ||
        (o->optimizer == CODI_LENS_ADAM && !(o->beta2 >= 0 && o->beta2 < 1 && o->eps > 0)) ||
        (o->optimizer != CODI_LENS_SGD && o->optimizer != CODI_LENS_ADAM)) {
        codi__err(err, errsz, "training options out of range (need samples, batch, steps >= 1; lr, decay, clip >= 0; momentum, beta2 in [0, 1))");
        return NULL;
    }
    if (!(tr = (codi_lens_trainer *)CODI_MALLOC(sizeof *tr))) { codi__err(err, errsz, "out of memory"); return NULL; }
    memset(tr, 0, sizeof *tr);
    tr->m = m; tr->t = t; tr->o = *o; tr->n_samples = n_samples; tr->fn = fn; tr->user = user; tr->perm_epoch = -1;
    tr->o.n_threads = threads;
    tr->gw = (float *)CODI_MALLOC(nw * sizeof(float)); tr->gb = (float *)CODI_MALLOC(nb * sizeof(float));
    tr->m1w = (float *)CODI_MALLOC(nw * sizeof(float)); tr->m1b = (float *)CODI_MALLOC(nb * sizeof(float));
    if (o->optimizer == CODI_LENS_ADAM) {
        tr->m2w = (float *)CODI_MALLOC(nw * sizeof(float)); tr->m2b = (float *)CODI_MALLOC(nb * sizeof(float));
    }
    tr->row_sq = (double *)CODI_MALLOC(nb * sizeof(double));
    tr->perm = (long *)CODI_MALLOC((size_t)n_samples * sizeof(long));
    if (!tr->gw || !tr->gb || !tr->m1w || !tr->m1b || (o->optimizer == CODI_LENS_ADAM && (!tr->m2w || !tr->m2b)) ||
        !tr->row_sq || !tr->perm || codi__lens_batch_init(&tr->lb, m, t, o->batch, threads, 1)) {
        codi_lens_trainer_free(tr); codi__err(err, errsz, "out of memory"); return NULL;
    }
    memset(tr->m1w, 0, nw * sizeof(float)); memset(tr->m1b, 0, nb * sizeof(float));
    if (tr->m2w) { memset(tr->m2w, 0, nw * sizeof(float)); memset(tr->m2b, 0, nb * sizeof(float)); }
    if (threads > 1 && !(tr->pool = codi__lens_pool(threads))) { codi_lens_trainer_free(tr); codi__err(err, errsz, "cannot start threads"); return NULL; }
    return tr;
}

CODI_API long codi_lens_trainer_steps_done(const codi_lens_trainer *tr) { return tr->step; }
CODI_API const char *codi_lens_trainer_error(const codi_lens_trainer *tr) { return tr->err; }

/* The sample at offset k of the run: epochs back to back, each a seeded Fisher-Yates shuffle. */
static long codi__lens_sample_at(codi_lens_trainer *tr, long k) {
    long epoch = k / tr->n_samples, i;
    if (epoch != tr->perm_epoch) {
        uint64_t s = tr->o.seed ^ ((uint64_t)epoch * 0xD1B54A32D192ED03ull);
        for (i = 0; i < tr->n_samples; i++) tr->perm[i] = i;
        for (i = tr->n_samples - 1; i > 0; i--) {
            long j = (long)(codi_splitmix64(&s) % (uint64_t)(i + 1)), tmp = tr->perm[i];
            tr->perm[i] = tr->perm[j]; tr->perm[j] = tmp;
        }
        tr->perm_epoch = epoch;
    }
    return tr->perm[k % tr->n_samples];
}

/* Rows (l, i): gradient row i of W_l and element i of b_l from the batch's dx, and its squared norm. */
static void codi__lens_grad_task(void *ctx, int tid, int a, int e) {
    codi_lens_trainer *tr = (codi_lens_trainer *)ctx;
    const codi__lens_batch *lb = &tr->lb;
    int D = tr->t->dim, L1 = tr->t->n_layers + 1, row, b, j;
    (void)tid;
    for (row = a; row < e; row++) {
        int l = row / D, i = row % D;
        float *gw = tr->gw + (size_t)row * D, gb = 0;
        double sq = 0;
        for (j = 0; j < D; j++) gw[j] = 0;
        for (b = 0; b < lb->n; b++) {
            float d = lb->dx[((size_t)l * lb->cap + b) * D + i];
            const float *h = lb->resid + ((size_t)b * L1 + l) * D;
            gb += d;
            for (j = 0; j < D; j++) gw[j] += d * h[j];
        }
        tr->gb[row] = gb;
        for (j = 0; j < D; j++) sq += (double)gw[j] * gw[j];
        tr->row_sq[row] = sq + (double)gb * gb;
    }
}

/* One parameter: clipped gradient g, weight decay, then the optimiser's update. */
static void codi__lens_update(const codi_lens_train_opts *o, long step, float lr, float clip, float *p, float g0, float *m1, float *m2) {
    float g = g0 * clip + (float)o->weight_decay * *p;
    if (o->optimizer == CODI_LENS_SGD) {                          /* torch.optim.SGD, nesterov */
        float mu = (float)o->momentum;
        *m1 = step == 0 ? g : mu * *m1 + g;
        *p -= lr * (g + mu * *m1);
    } else {                                                      /* torch.optim.Adam */
        double b1 = o->momentum, b2 = o->beta2, t = (double)(step + 1);
        float bc1 = (float)(1 - pow(b1, t)), bc2s = (float)sqrt(1 - pow(b2, t));
        *m1 += (1 - (float)b1) * (g - *m1);
        *m2 = (float)b2 * *m2 + (1 - (float)b2) * g * g;
        *p -= (lr / bc1) * (*m1 / (sqrtf(*m2) / bc2s + (float)o->eps));
    }
}

/* The learning rate of step: get_linear_schedule_with_warmup with 0 warmup when linear_decay. */
static double codi__lens_lr(const codi_lens_train_opts *o, long step) {
    if (!o->linear_decay) return o->lr;
    return o->lr * (step >= o->total_steps ? 0.0 : (double)(o->total_steps - step) / o->total_steps);
}

static void codi__lens_update_task(void *ctx, int tid, int a, int e) {
    codi_lens_trainer *tr = (codi_lens_trainer *)ctx;
    int D = tr->t->dim, row, j;
    float lr = (float)tr->lr_now, clip = (float)tr->clip_coef;
    (void)tid;
    for (row = a; row < e; row++) {
        size_t w0 = (size_t)row * D;
        for (j = 0; j < D; j++)
            codi__lens_update(&tr->o, tr->step, lr, clip, tr->t->weight + w0 + j, tr->gw[w0 + j], tr->m1w + w0 + j,
                              tr->m2w ? tr->m2w + w0 + j : NULL);
        codi__lens_update(&tr->o, tr->step, lr, clip, tr->t->bias + row, tr->gb[row], tr->m1b + row, tr->m2b ? tr->m2b + row : NULL);
    }
}

CODI_API int codi_lens_trainer_step(codi_lens_trainer *tr, double *loss) {
    const codi_config *c = &tr->m->config;
    int B = tr->o.batch, b, rows = c->n_layers * c->dim, i;
    long *idx = (long *)CODI_MALLOC((size_t)B * sizeof(long));
    double part[512], norm = 0;
    if (!idx) { codi__err(tr->err, sizeof tr->err, "out of memory"); return -1; }
    if (c->n_layers > 512) { CODI_FREE(idx); codi__err(tr->err, sizeof tr->err, "too many layers"); return -1; }
    for (b = 0; b < B; b++) idx[b] = codi__lens_sample_at(tr, tr->step * (long)B + b);
    if (codi__lens_batch_fill(&tr->lb, tr->fn, tr->user, idx, B, tr->err, sizeof tr->err)) { CODI_FREE(idx); return -1; }
    CODI_FREE(idx);
    codi__lens_batch_run(&tr->lb, tr->pool, part);
    CODI__PARALLEL(tr->pool, codi__lens_grad_task, tr, rows);
    for (i = 0; i < rows; i++) norm += tr->row_sq[i];
    norm = sqrt(norm);
    if (!(norm == norm) || norm > DBL_MAX) { codi__err(tr->err, sizeof tr->err, "gradient is not finite at step %ld", tr->step); return -1; }
    tr->clip_coef = 1.0;                                          /* torch.nn.utils.clip_grad_norm_ */
    if (tr->o.clip_norm > 0 && tr->o.clip_norm / (norm + 1e-6) < 1.0) tr->clip_coef = tr->o.clip_norm / (norm + 1e-6);
    tr->lr_now = codi__lens_lr(&tr->o, tr->step);
    CODI__PARALLEL(tr->pool, codi__lens_update_task, tr, rows);
    tr->step++;
    if (loss) for (i = 0; i < c->n_layers; i++) loss[i] = part[i];
    return 0;
}

#endif /* CODI_NO_RESEARCH */

/* >>io: safetensors files for numpy / torch: a writer and a reader ---------------------------- */

/* A growing text buffer; ok drops to 0 when memory runs out (then every append is a no-op). */
typedef struct { char *p; size_t len, cap; int ok; } codi__buf;

static void codi__buf_put(codi__buf *b, const char *s, size_t n) {
    if (!b->ok) return;
    if (n > ((size_t)-1) / 2 - b->len) { b->ok = 0; return; }
    if (b->len + n + 1 > b->cap) {
        size_t nc = (b->len + n + 1) * 2;
        char *np = (char *)CODI_REALLOC(b->p, nc);
        if (!np) { b->ok = 0; return; }
        b->p = np; b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n; b->p[b->len] = 0;
}

static void codi__buf_str(codi__buf *b, const char *s) { codi__buf_put(b, s, strlen(s)); }

CODI_API size_t codi_json_quote(char *out, size_t cap, const char *s) {
    size_t n = 0;
    char esc[8];
#define CODI__PUT(c) do { if (n + 1 < cap) out[n] = (c); n++; } while (0)
    CODI__PUT('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int k, len = 1;
        esc[0] = (char)ch;
        if (ch == '"' || ch == '\\') { esc[0] = '\\'; esc[1] = (char)ch; len = 2; }
        else if (ch == '\n') { esc[0] = '\\'; esc[1] = 'n'; len = 2; }
        else if (ch < 0x20) len = snprintf(esc, sizeof esc, "\\u%04x", ch);
        for (k = 0; k < len; k++) CODI__PUT(esc[k]);
    }
    CODI__PUT('"');
#undef CODI__PUT
    if (cap) out[n < cap ? n : cap - 1] = 0;
    return n;
}

CODI_API int codi_json_write_string(FILE *f, const char *s) {
    char small[256], *p = small;
    size_t n = codi_json_quote(small, sizeof small, s);
    int rc;
    if (n >= sizeof small) {
        if (!(p = (char *)CODI_MALLOC(n + 1))) return -1;
        codi_json_quote(p, n + 1, s);
    }
    rc = fwrite(p, 1, n, f) == n ? 0 : -1;
    if (p != small) CODI_FREE(p);
    return rc;
}

static void codi__buf_json_string(codi__buf *b, const char *s) {
    size_t n = codi_json_quote(NULL, 0, s);
    char *p = (char *)CODI_MALLOC(n + 1);
    if (!p) { b->ok = 0; return; }
    codi_json_quote(p, n + 1, s);
    codi__buf_put(b, p, n);
    CODI_FREE(p);
}

static const char *const codi__dtype_names[] = { "F32", "BF16", "F16", "I32", "U8", "F64", "I64" };

/* Bytes of a tensor, or 0 with *bad set when a dim is negative or the product overflows. */
static size_t codi__entry_bytes(const codi_safetensors_entry *e, int *bad) {
    size_t bytes = codi__dtype_size(e->dtype);
    int d;
    for (d = 0; d < e->ndim; d++) {
        if (e->shape[d] < 0 || (e->shape[d] > 0 && bytes > ((size_t)-1 >> 1) / (size_t)e->shape[d])) { *bad = 1; return 0; }
        bytes *= (size_t)e->shape[d];
    }
    return bytes;
}

/* The files we write keep every tensor 64-byte aligned where the format allows: the header is
   padded with spaces so the data start at a multiple of 64 (8 + header length), and the data are
   laid out tensors whose size is a multiple of 64 bytes first (each then starts on a 64-byte
   boundary), the rest after (only the first of those aligned: safetensors readers refuse gaps
   between tensors). Weight matrices and activation rows are multiples of 64 bytes; mapped,
   aligned rows keep the GEMV's loads within cache lines (decode measured 10-15% faster). */
#define CODI__ST_ALIGN 64
/* Offsets off[i] for tensors of bytes[i] in that order; returns the data's size. */
static size_t codi__st_layout(const size_t *bytes, int n, size_t *off) {
    size_t total = 0;
    int pass, i;
    for (pass = 0; pass < 2; pass++)
        for (i = 0; i < n; i++)
            if ((bytes[i] % CODI__ST_ALIGN == 0) == (pass == 0)) { off[i] = total; total += bytes[i]; }
    return total;
}
/* Spaces after a header of len bytes so that 8 + len is a multiple of CODI__ST_ALIGN. */
static size_t codi__st_header_pad(size_t len) { return (CODI__ST_ALIGN - (8 + len) % CODI__ST_ALIGN) % CODI__ST_ALIGN; }

/* codi_write_safetensors to path (to == NULL) or to the stream to. */
static int codi__write_safetensors(const char *path, FILE *to, const codi_safetensors_entry *e, int n, const char *const *metadata,
                                   char *err, size_t errsz) {
    codi__buf hdr = { NULL, 0, 0, 1 };
    char num[64], *tmp = NULL;
    size_t pad, plen = path ? strlen(path) : 0, *bytes = NULL, *offs = NULL, total = 0;
    unsigned char hl8[8];
    uint64_t hl;
    FILE *fp = NULL;
    int i, d, bad = 0, has_format = 0;
    codi__buf_str(&hdr, "{\"__metadata__\":{");
    for (i = 0; metadata && metadata[i] && metadata[i + 1]; i += 2) {
        if (i) codi__buf_str(&hdr, ",");
        codi__buf_json_string(&hdr, metadata[i]); codi__buf_str(&hdr, ":"); codi__buf_json_string(&hdr, metadata[i + 1]);
        has_format |= !strcmp(metadata[i], "format");
    }
    codi__buf_str(&hdr, has_format ? "}" : i ? ",\"format\":\"pt\"}" : "\"format\":\"pt\"}");   /* torch's default */
    if (n < 0 || !(bytes = (size_t *)CODI_MALLOC(sizeof(size_t) * (size_t)(n + 1))) || !(offs = (size_t *)CODI_MALLOC(sizeof(size_t) * (size_t)(n + 1)))) {
        codi__err(err, errsz, "out of memory"); goto fail;
    }
    memset(bytes, 0, sizeof(size_t) * (size_t)(n + 1));
    for (i = 0; i < n; i++) {
        if (e[i].dtype < CODI_F32 || e[i].dtype > CODI_I64 || e[i].ndim < 0 || e[i].ndim > 8 || !e[i].name) {
            codi__err(err, errsz, "tensor %d: bad dtype, rank or name", i); goto fail;
        }
        bytes[i] = codi__entry_bytes(&e[i], &bad);
        if (bad || total > ((size_t)-1 >> 1) - bytes[i]) { codi__err(err, errsz, "tensor '%s': shape too large", e[i].name); goto fail; }
        total += bytes[i];
    }
    codi__st_layout(bytes, n, offs);
    for (i = 0; i < n; i++) {
        codi__buf_str(&hdr, ",");
        codi__buf_json_string(&hdr, e[i].name);
        codi__buf_str(&hdr, ":{\"dtype\":\""); codi__buf_str(&hdr, codi__dtype_names[e[i].dtype]); codi__buf_str(&hdr, "\",\"shape\":[");
        for (d = 0; d < e[i].ndim; d++) { snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)e[i].shape[d]); codi__buf_str(&hdr, num); }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offs[i], (unsigned long long)(offs[i] + bytes[i]));
        codi__buf_str(&hdr, num);
    }
    codi__buf_str(&hdr, "}");
    pad = codi__st_header_pad(hdr.len);
    for (i = 0; i < (int)pad; i++) codi__buf_str(&hdr, " ");    /* the data start 64-byte aligned */
    if (!hdr.ok || (!to && !(tmp = (char *)CODI_MALLOC(plen + 5)))) { codi__err(err, errsz, "out of memory"); goto fail; }
    if (!to) { memcpy(tmp, path, plen); memcpy(tmp + plen, ".tmp", 5); }
    hl = hdr.len;
    for (i = 0; i < 8; i++) hl8[i] = (unsigned char)(hl >> (8 * i));
    if (!(fp = to ? to : fopen(tmp, "wb"))) { codi__err(err, errsz, "cannot write %s", tmp); goto fail; }
    bad = fwrite(hl8, 1, 8, fp) != 8 || fwrite(hdr.p, 1, hdr.len, fp) != hdr.len;
    for (d = 0; d < 2; d++)                          /* in codi__st_layout's order */
        for (i = 0; i < n && !bad; i++)
            if ((bytes[i] % CODI__ST_ALIGN == 0) == (d == 0)) bad = bytes[i] && fwrite(e[i].data, 1, bytes[i], fp) != bytes[i];
    if (to) {
        fp = NULL;
        if (bad || fflush(to) != 0 || ferror(to)) { codi__err(err, errsz, "write failed"); goto fail; }
        CODI_FREE(hdr.p); CODI_FREE(bytes); CODI_FREE(offs);
        return 0;
    }
    if (fclose(fp) != 0 || bad) { fp = NULL; codi__err(err, errsz, "error writing %s", tmp); remove(tmp); goto fail; }
    fp = NULL;
    if (rename(tmp, path) != 0) { codi__err(err, errsz, "cannot rename %s to %s", tmp, path); remove(tmp); goto fail; }
    CODI_FREE(hdr.p); CODI_FREE(tmp); CODI_FREE(bytes); CODI_FREE(offs);
    return 0;
fail:
    if (fp) fclose(fp);
    CODI_FREE(hdr.p); CODI_FREE(tmp); CODI_FREE(bytes); CODI_FREE(offs);
    return -1;
}

CODI_API int codi_write_safetensors(const char *path, const codi_safetensors_entry *e, int n, const char *const *metadata,
                                    char *err, size_t errsz) {
    return codi__write_safetensors(path, NULL, e, n, metadata, err, errsz);
}

CODI_API int codi_write_safetensors_file(FILE *fp, const codi_safetensors_entry *e, int n, const char *const *metadata,
                                         char *err, size_t errsz) {
    return codi__write_safetensors(NULL, fp, e, n, metadata, err, errsz);
}

/* The HF config.json keys codi__apply_config_text reads, for m. */
static void codi__config_text(const codi_model *m, char *out, size_t cap) {
    const codi_config *c = &m->config;
    size_t n;
    int i;
    char bos[16] = "null";                        /* a model without a BOS id (bos_id -1) */
    if (c->bos_id >= 0) snprintf(bos, sizeof bos, "%d", c->bos_id);
    n = (size_t)snprintf(out, cap, "{\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
                         "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, \"rms_norm_eps\": %.9g, "
                         "\"rope_theta\": %.9g, \"bos_token_id\": %s, \"tie_word_embeddings\": %s, \"eos_token_id\": [",
                         c->dim, c->ffn_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, (double)c->norm_eps,
                         (double)c->rope_theta, bos, m->w.lm_head.data == m->w.embed.data ? "true" : "false");
    for (i = 0; i < c->n_eos && n < cap; i++) n += (size_t)snprintf(out + n, cap - n, "%s%d", i ? ", " : "", c->eos_ids[i]);
    if (n >= cap) return;
    if (c->rope_llama3)
        snprintf(out + n, cap - n, "], \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %.9g, \"low_freq_factor\": %.9g, "
                 "\"high_freq_factor\": %.9g, \"original_max_position_embeddings\": %d}}", (double)c->rope_factor,
                 (double)c->rope_low_freq_factor, (double)c->rope_high_freq_factor, c->rope_original_max_pos);
    else snprintf(out + n, cap - n, "], \"rope_scaling\": null}");
}

static codi_safetensors_entry codi__entry_matrix(const char *name, const codi_matrix *w) {
    codi_safetensors_entry e;
    e.name = name; e.dtype = w->dtype; e.data = w->data; e.ndim = 2; e.shape[0] = w->rows; e.shape[1] = w->cols;
    return e;
}

static codi_safetensors_entry codi__entry_vector(const char *name, const float *v, int n) {
    codi_safetensors_entry e;
    e.name = name; e.dtype = CODI_F32; e.data = v; e.ndim = 1; e.shape[0] = n;
    return e;
}

CODI_API int codi_save_merged(const codi_model *m, const char *path, char *err, size_t errsz) {
    const codi_config *c = &m->config;
    int L = c->n_layers, n = 0, l, k, rc;
    codi_safetensors_entry *e = (codi_safetensors_entry *)CODI_MALLOC((size_t)(9 * L + 10) * sizeof *e);
    char (*names)[64] = (char (*)[64])CODI_MALLOC((size_t)(9 * L + 10) * 64), cfg[1024];
    const char *meta[3];
    static const char *const mat[7] = { "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj" };
    if (!e || !names) { CODI_FREE(e); CODI_FREE(names); codi__err(err, errsz, "out of memory"); return -1; }
    e[n++] = codi__entry_matrix("model.embed_tokens.weight", &m->w.embed);
    for (l = 0; l < L; l++) {
        const codi_layer *w = &m->w.layers[l];
        const codi_matrix *mats[7];
        mats[0] = &w->wq; mats[1] = &w->wk; mats[2] = &w->wv; mats[3] = &w->wo; mats[4] = &w->gate; mats[5] = &w->up; mats[6] = &w->down;
        snprintf(names[n], 64, "model.layers.%d.input_layernorm.weight", l); e[n] = codi__entry_vector(names[n], w->attn_norm, c->dim); n++;
        snprintf(names[n], 64, "model.layers.%d.post_attention_layernorm.weight", l); e[n] = codi__entry_vector(names[n], w->mlp_norm, c->dim); n++;
        for (k = 0; k < 7; k++) { snprintf(names[n], 64, "model.layers.%d.%s.weight", l, mat[k]); e[n] = codi__entry_matrix(names[n], mats[k]); n++; }
    }
    e[n++] = codi__entry_vector("model.norm.weight", m->w.final_norm, c->dim);
    if (m->w.lm_head.data != m->w.embed.data) e[n++] = codi__entry_matrix("lm_head.weight", &m->w.lm_head);
    if (c->prj_dim) {
        e[n++] = codi__entry_matrix("prj.1.weight", &m->w.prj1); e[n++] = codi__entry_vector("prj.1.bias", m->w.prj1_b, c->prj_dim);
        e[n++] = codi__entry_matrix("prj.3.weight", &m->w.prj3); e[n++] = codi__entry_vector("prj.3.bias", m->w.prj3_b, c->dim);
        e[n++] = codi__entry_vector("prj.ln.weight", m->w.prj_ln_w, c->dim); e[n++] = codi__entry_vector("prj.ln.bias", m->w.prj_ln_b, c->dim);
    }
    codi__config_text(m, cfg, sizeof cfg);
    meta[0] = "codi_config"; meta[1] = cfg; meta[2] = NULL;
    rc = codi_write_safetensors(path, e, n, meta, err, errsz);
    CODI_FREE(e); CODI_FREE(names);
    return rc;
}

/* The options a checkpoint must agree on, as metadata strings into buf [13][32]. */
#ifndef CODI_NO_RESEARCH   /* to the end of the file */

static void codi__lens_opts_meta(const codi_lens_trainer *tr, char (*buf)[32], const char **meta) {
    static const char *const keys[13] = { "optimizer", "lr", "momentum", "beta2", "eps", "weight_decay", "clip_norm",
                                          "linear_decay", "total_steps", "batch", "seed", "n_samples", "step" };
    const codi_lens_train_opts *o = &tr->o;
    int i;
    snprintf(buf[0], 32, "%s", o->optimizer == CODI_LENS_SGD ? "sgd_nesterov" : "adam");
    snprintf(buf[1], 32, "%.17g", o->lr); snprintf(buf[2], 32, "%.17g", o->momentum);
    snprintf(buf[3], 32, "%.17g", o->beta2); snprintf(buf[4], 32, "%.17g", o->eps);
    snprintf(buf[5], 32, "%.17g", o->weight_decay); snprintf(buf[6], 32, "%.17g", o->clip_norm);
    snprintf(buf[7], 32, "%d", o->linear_decay); snprintf(buf[8], 32, "%ld", o->total_steps);
    snprintf(buf[9], 32, "%d", o->batch); snprintf(buf[10], 32, "%llu", (unsigned long long)o->seed);
    snprintf(buf[11], 32, "%ld", tr->n_samples); snprintf(buf[12], 32, "%ld", tr->step);
    for (i = 0; i < 13; i++) { meta[2 * i] = keys[i]; meta[2 * i + 1] = buf[i]; }
}

CODI_API int codi_lens_trainer_save(const codi_lens_trainer *tr, const char *path, char *err, size_t errsz) {
    const codi_tuned_lens *t = tr->t;
    int64_t L = t->n_layers, D = t->dim;
    codi_safetensors_entry e[6];
    char buf[13][32];
    const char *meta[2 * 13 + 5];
    int i, n = tr->m2w ? 6 : 4;
    const float *data[6];
    static const char *const names[6] = { "weight", "bias", "m1.weight", "m1.bias", "m2.weight", "m2.bias" };
    data[0] = t->weight; data[1] = t->bias; data[2] = tr->m1w; data[3] = tr->m1b; data[4] = tr->m2w; data[5] = tr->m2b;
    memset(e, 0, sizeof e);
    for (i = 0; i < n; i++) {
        e[i].name = names[i]; e[i].dtype = CODI_F32; e[i].data = data[i];
        e[i].ndim = i % 2 ? 2 : 3; e[i].shape[0] = L; e[i].shape[1] = D; e[i].shape[2] = D;
    }
    codi__lens_opts_meta(tr, buf, meta);
    meta[26] = "content"; meta[27] = "codi_lens.lens_trainer.v1"; meta[28] = NULL;   /* "format" is the writer's "pt" */
    if (tr->o.data_id) { meta[28] = "data"; meta[29] = tr->o.data_id; meta[30] = NULL; }
    return codi_write_safetensors(path, e, n, meta, err, errsz);
}

CODI_API int codi_lens_trainer_resume(codi_lens_trainer *tr, const char *path, char *err, size_t errsz) {
    codi_tuned_lens *t = tr->t;
    size_t L = (size_t)t->n_layers, D = (size_t)t->dim;
    codi_safetensors_file *f = codi_safetensors_open(path, err, errsz);
    char buf[13][32];
    const char *meta[2 * 13], *v;
    float *dst[6];
    size_t cap[6];
    int i, n = tr->m2w ? 6 : 4;
    static const char *const names[6] = { "weight", "bias", "m1.weight", "m1.bias", "m2.weight", "m2.bias" };
    if (!f) return -1;
    codi__lens_opts_meta(tr, buf, meta);
    if (!(v = codi_safetensors_metadata(f, "content")) || strcmp(v, "codi_lens.lens_trainer.v1")) {
        codi__err(err, errsz, "%s is not a tuned-lens training checkpoint", path); codi_safetensors_close(f); return -1;
    }
    for (i = 0; i < 12; i++)
        if (!(v = codi_safetensors_metadata(f, meta[2 * i])) || strcmp(v, meta[2 * i + 1])) {
            codi__err(err, errsz, "%s was saved with %s = %s, not %s: resume with the same options", path, meta[2 * i], v ? v : "(none)", meta[2 * i + 1]);
            codi_safetensors_close(f); return -1;
        }
    dst[0] = t->weight; dst[1] = t->bias; dst[2] = tr->m1w; dst[3] = tr->m1b; dst[4] = tr->m2w; dst[5] = tr->m2b;
    for (i = 0; i < 6; i++) cap[i] = i % 2 ? L * D : L * D * D;
    for (i = 0; i < n; i++)
        if (codi_safetensors_read_f32(f, names[i], dst[i], cap[i], err, errsz) != (long)cap[i]) {
            if (!err[0] || strstr(err, "room")) codi__err(err, errsz, "%s: %s has the wrong size", path, names[i]);
            codi_safetensors_close(f); return -1;
        }
    if (!(v = codi_safetensors_metadata(f, "step")) || (tr->step = strtol(v, NULL, 10)) < 0) {
        codi__err(err, errsz, "%s has no step count", path); codi_safetensors_close(f); return -1;
    }
    codi_safetensors_close(f);
    return 0;
}

/* >>torchsave: a state dict of f32 tensors as torch.save writes it (zip of stored entries:
   archive/data.pkl, archive/byteorder, archive/data/N, archive/version). The pickle uses only
   what torch.load(weights_only=True) allows: OrderedDict, _rebuild_tensor_v2, FloatStorage. */

static void codi__buf_byte(codi__buf *b, int c) { char x = (char)c; codi__buf_put(b, &x, 1); }
#ifndef CODI_NO_TORCH
static void codi__buf_le(codi__buf *b, uint64_t v, int bytes) { int i; for (i = 0; i < bytes; i++) codi__buf_byte(b, (int)((v >> (8 * i)) & 255u)); }
static void codi__pw_str(codi__buf *b, const char *s) { codi__buf_byte(b, 'X'); codi__buf_le(b, strlen(s), 4); codi__buf_put(b, s, strlen(s)); }
static void codi__pw_int(codi__buf *b, int64_t v) { codi__buf_byte(b, 'J'); codi__buf_le(b, (uint64_t)(uint32_t)(int32_t)v, 4); }
static void codi__pw_global(codi__buf *b, const char *mod, const char *name) {
    codi__buf_byte(b, 'c'); codi__buf_put(b, mod, strlen(mod)); codi__buf_byte(b, '\n'); codi__buf_put(b, name, strlen(name)); codi__buf_byte(b, '\n');
}

/* One zip entry: local header (padded by an extra field so the data starts 64-byte aligned, as
   torch's writer does), data; its central directory record goes to cd. */
static void codi__zip_put(codi__buf *zip, codi__buf *cd, const char *name, const void *data, size_t n) {
    size_t nl = strlen(name), pad = (64 - (zip->len + 30 + nl + 4) % 64) % 64, off = zip->len;
    codi__crc32_tables tables;                                           /* >>zip's CRC-32 */
    uint32_t crc;
    codi__crc32_init(&tables);
    crc = codi__crc32(&tables, (const unsigned char *)data, n);
    codi__buf_le(zip, 0x04034b50u, 4); codi__buf_le(zip, 20, 2); codi__buf_le(zip, 0, 2); codi__buf_le(zip, 0, 2);
    codi__buf_le(zip, 0, 2); codi__buf_le(zip, 0x21, 2); codi__buf_le(zip, crc, 4);
    codi__buf_le(zip, n, 4); codi__buf_le(zip, n, 4); codi__buf_le(zip, nl, 2); codi__buf_le(zip, 4 + pad, 2);
    codi__buf_put(zip, name, nl);
    codi__buf_le(zip, 0x4246, 2); codi__buf_le(zip, pad, 2);           /* "FB" padding field */
    while (pad--) codi__buf_byte(zip, 'Z');
    codi__buf_put(zip, (const char *)data, n);
    codi__buf_le(cd, 0x02014b50u, 4); codi__buf_le(cd, 20, 2); codi__buf_le(cd, 20, 2); codi__buf_le(cd, 0, 2);
    codi__buf_le(cd, 0, 2); codi__buf_le(cd, 0, 2); codi__buf_le(cd, 0x21, 2); codi__buf_le(cd, crc, 4);
    codi__buf_le(cd, n, 4); codi__buf_le(cd, n, 4); codi__buf_le(cd, nl, 2); codi__buf_le(cd, 0, 2);
    codi__buf_le(cd, 0, 2); codi__buf_le(cd, 0, 2); codi__buf_le(cd, 0, 2); codi__buf_le(cd, 0, 4); codi__buf_le(cd, off, 4);
    codi__buf_put(cd, name, nl);
}

/* Writes n f32 tensors (names, data, ndim <= 4, shapes) as a torch.save state dict. */
static int codi__torch_save(const char *path, int n, const char *const *names, const float *const *data,
                            const int *ndim, const int64_t (*shape)[4], char *err, size_t errsz) {
    codi__buf pk, zip, cd;
    char key[32], tmp[4200];
    FILE *fp;
    int i, d, rc = -1;
    memset(&pk, 0, sizeof pk); memset(&zip, 0, sizeof zip); memset(&cd, 0, sizeof cd);
    pk.ok = zip.ok = cd.ok = 1;
    codi__buf_put(&pk, "\x80\x02", 2);
    codi__pw_global(&pk, "collections", "OrderedDict"); codi__buf_put(&pk, ")R(", 3);
    for (i = 0; i < n; i++) {
        int64_t numel = codi__numel(ndim[i], shape[i]), stride = 1, strides[4];
        if (numel > 0x3fffffff) { codi__err(err, errsz, "tensor %s too large for this writer", names[i]); goto done; }
        for (d = ndim[i] - 1; d >= 0; d--) { strides[d] = stride; stride *= shape[i][d]; }
        snprintf(key, sizeof key, "%d", i);
        codi__pw_str(&pk, names[i]);
        codi__pw_global(&pk, "torch._utils", "_rebuild_tensor_v2");
        codi__buf_put(&pk, "((", 2);
        codi__pw_str(&pk, "storage"); codi__pw_global(&pk, "torch", "FloatStorage");
        codi__pw_str(&pk, key); codi__pw_str(&pk, "cpu"); codi__pw_int(&pk, numel);
        codi__buf_put(&pk, "tQ", 2);
        codi__pw_int(&pk, 0);
        codi__buf_byte(&pk, '('); for (d = 0; d < ndim[i]; d++) codi__pw_int(&pk, shape[i][d]); codi__buf_byte(&pk, 't');
        codi__buf_byte(&pk, '('); for (d = 0; d < ndim[i]; d++) codi__pw_int(&pk, strides[d]); codi__buf_byte(&pk, 't');
        codi__buf_byte(&pk, 0x89);                                       /* requires_grad False */
        codi__pw_global(&pk, "collections", "OrderedDict"); codi__buf_put(&pk, ")R", 2);  /* backward hooks */
        codi__buf_put(&pk, "tR", 2);
    }
    codi__buf_put(&pk, "u.", 2);
    codi__zip_put(&zip, &cd, "archive/data.pkl", pk.p, pk.len);
    codi__zip_put(&zip, &cd, "archive/byteorder", "little", 6);
    for (i = 0; i < n; i++) {
        snprintf(tmp, sizeof tmp, "archive/data/%d", i);
        codi__zip_put(&zip, &cd, tmp, data[i], (size_t)codi__numel(ndim[i], shape[i]) * sizeof(float));
    }
    codi__zip_put(&zip, &cd, "archive/version", "3\n", 2);
    {
        size_t cd_off = zip.len;
        codi__buf_put(&zip, cd.p, cd.len);
        codi__buf_le(&zip, 0x06054b50u, 4); codi__buf_le(&zip, 0, 4);
        codi__buf_le(&zip, (uint64_t)n + 3, 2); codi__buf_le(&zip, (uint64_t)n + 3, 2);
        codi__buf_le(&zip, cd.len, 4); codi__buf_le(&zip, cd_off, 4); codi__buf_le(&zip, 0, 2);
    }
    if (!pk.ok || !zip.ok || !cd.ok) { codi__err(err, errsz, "out of memory"); goto done; }
    if (zip.len > 0xffffffffu) { codi__err(err, errsz, "%s would exceed 4 GiB (zip64 is not written)", path); goto done; }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!(fp = fopen(tmp, "wb"))) { codi__err(err, errsz, "cannot write %s", tmp); goto done; }
    if (fwrite(zip.p, 1, zip.len, fp) != zip.len) { fclose(fp); remove(tmp); codi__err(err, errsz, "error writing %s", tmp); goto done; }
    if (fclose(fp) != 0 || rename(tmp, path) != 0) { remove(tmp); codi__err(err, errsz, "error writing %s", path); goto done; }
    rc = 0;
done:
    CODI_FREE(pk.p); CODI_FREE(zip.p); CODI_FREE(cd.p);
    return rc;
}

#else
static int codi__torch_save(const char *path, int n, const char *const *names, const float *const *data,
                            const int *ndim, const int64_t (*shape)[4], char *err, size_t errsz) {
    (void)n; (void)names; (void)data; (void)ndim; (void)shape;
    codi__err(err, errsz, "%s: a PyTorch file, but this library was built with CODI_NO_TORCH (safetensors only)", path);
    return -1;
}
#endif /* CODI_NO_TORCH */

/* >>lensfiles: tuned lenses as the tuned-lens library and our safetensors form store them */

CODI_API int codi_tuned_lens_save_dir(const codi_tuned_lens *t, const char *dir, const char *base_model, char *err, size_t errsz) {
    int L = t->n_layers, i, rc = -1;
    char path[4096], (*names)[24] = (char (*)[24])CODI_MALLOC((size_t)2 * L * sizeof *names);
    const char **np = (const char **)CODI_MALLOC((size_t)2 * L * sizeof *np);
    const float **dp = (const float **)CODI_MALLOC((size_t)2 * L * sizeof *dp);
    int *nd = (int *)CODI_MALLOC((size_t)2 * L * sizeof *nd);
    int64_t (*sh)[4] = (int64_t (*)[4])CODI_MALLOC((size_t)2 * L * sizeof *sh);
    FILE *fp;
    if (!names || !np || !dp || !nd || !sh) { codi__err(err, errsz, "out of memory"); goto done; }
    for (i = 0; i < 2 * L; i++) {
        int l = i / 2, is_bias = i % 2;
        snprintf(names[i], sizeof names[i], "%d.%s", l, is_bias ? "bias" : "weight");
        np[i] = names[i];
        dp[i] = is_bias ? t->bias + (size_t)l * t->dim : t->weight + (size_t)l * t->dim * t->dim;
        nd[i] = is_bias ? 1 : 2;
        sh[i][0] = t->dim; sh[i][1] = t->dim; sh[i][2] = sh[i][3] = 1;
    }
    snprintf(path, sizeof path, "%s/params.pt", dir);
    if (codi__torch_save(path, 2 * L, np, dp, nd, (const int64_t (*)[4])sh, err, errsz)) goto done;
    snprintf(path, sizeof path, "%s/config.json.tmp", dir);   /* renamed to config.json when complete */
    if (!(fp = fopen(path, "w"))) { codi__err(err, errsz, "cannot write %s", path); goto done; }
    fprintf(fp, "{\"base_model_name_or_path\": ");
    codi_json_write_string(fp, base_model ? base_model : "");
    fprintf(fp, ", \"d_model\": %d, \"num_hidden_layers\": %d, \"bias\": true, \"base_model_revision\": null, "
                "\"unembed_hash\": null, \"lens_type\": \"linear_tuned_lens\"}\n", t->dim, L);
    if (ferror(fp) | fclose(fp)) { codi__err(err, errsz, "error writing %s", path); remove(path); goto done; }
    {
        char final_path[4096];
        snprintf(final_path, sizeof final_path, "%s/config.json", dir);
        if (rename(path, final_path) != 0) { codi__err(err, errsz, "cannot rename %s to %s", path, final_path); remove(path); goto done; }
    }
    rc = 0;
done:
    CODI_FREE(names); CODI_FREE(np); CODI_FREE(dp); CODI_FREE(nd); CODI_FREE(sh);
    return rc;
}

CODI_API int codi_tuned_lens_save(const codi_tuned_lens *t, const char *path, const char *base_model, char *err, size_t errsz) {
    int L = t->n_layers, i, rc;
    char (*names)[24] = (char (*)[24])CODI_MALLOC((size_t)2 * L * sizeof *names), dm[16], nl[16];
    codi_safetensors_entry *e = (codi_safetensors_entry *)CODI_MALLOC((size_t)2 * L * sizeof *e);
    const char *meta[11];
    if (!names || !e) { CODI_FREE(names); CODI_FREE(e); codi__err(err, errsz, "out of memory"); return -1; }
    memset(e, 0, (size_t)2 * L * sizeof *e);
    for (i = 0; i < 2 * L; i++) {
        int l = i / 2, is_bias = i % 2;
        snprintf(names[i], sizeof names[i], "%d.%s", l, is_bias ? "bias" : "weight");
        e[i].name = names[i]; e[i].dtype = CODI_F32;
        e[i].data = is_bias ? t->bias + (size_t)l * t->dim : t->weight + (size_t)l * t->dim * t->dim;
        e[i].ndim = is_bias ? 1 : 2;
        e[i].shape[0] = e[i].shape[1] = t->dim;
    }
    snprintf(dm, sizeof dm, "%d", t->dim); snprintf(nl, sizeof nl, "%d", L);
    meta[0] = "content"; meta[1] = "codi_lens.tuned_lens.v1"; meta[2] = "base_model_name_or_path"; meta[3] = base_model ? base_model : "";
    meta[4] = "d_model"; meta[5] = dm; meta[6] = "num_hidden_layers"; meta[7] = nl; meta[8] = "lens_type"; meta[9] = "linear_tuned_lens"; meta[10] = NULL;
    rc = codi_write_safetensors(path, e, 2 * L, meta, err, errsz);
    CODI_FREE(names); CODI_FREE(e);
    return rc;
}

/* Fills t from a tensor table holding "{l}.weight" and (unless bias is 0) "{l}.bias". */
static int codi__tuned_lens_from(codi_tuned_lens *t, const codi__tensors *ts, int bias, const char *path, char *err, size_t errsz) {
    int l, D = t->dim;
    char name[32];
    size_t i;
    snprintf(name, sizeof name, "%d.weight", t->n_layers);
    if (codi__tensors_find(ts, name) || (snprintf(name, sizeof name, "layer_translators.%d.weight", t->n_layers), codi__tensors_find(ts, name))) { codi__err(err, errsz, "%s has more than %d translators: made for another model", path, t->n_layers); return -1; }
    for (l = 0; l < t->n_layers; l++) {
        int k;
        for (k = 0; k < 1 + (bias != 0); k++) {
            const codi__tensor *x;
            float *dst = k ? t->bias + (size_t)l * D : t->weight + (size_t)l * D * D;
            snprintf(name, sizeof name, "%d.%s", l, k ? "bias" : "weight");
            if (!(x = codi__tensors_find(ts, name))) {                 /* older library versions saved the whole module */
                char full[64];
                snprintf(full, sizeof full, "layer_translators.%s", name);
                x = codi__tensors_find(ts, full);
            }
            if (!x) { codi__err(err, errsz, "%s: tensor %s missing (a lens for %d layers?)", path, name, t->n_layers); return -1; }
            if (x->dtype < 0 || x->ndim != 2 - k || x->shape[0] != D || (!k && x->shape[1] != D)) {
                codi__err(err, errsz, "%s: %s is %s with %d dims [%lld, ...]; expected float [%d%s]", path, name, x->dtype_name,
                          x->ndim, (long long)x->shape[0], D, k ? "" : ", D");
                return -1;
            }
            for (i = 0; i < (size_t)(k ? D : D * D); i++) dst[i] = codi_elem_f32(x->data, x->dtype, i);
            if (!codi__all_finite(dst, k ? D : D * D)) { codi__err(err, errsz, "%s: %s is not finite (NaN or Inf)", path, name); return -1; }
        }
    }
    return 0;
}

CODI_API codi_tuned_lens *codi_tuned_lens_load(const codi_model *m, const char *path, char *err, size_t errsz) {
    codi__tensors ts;
    codi_tuned_lens *t = NULL;
    char file[4096], cfg[4096];
    size_t len;
    char *text;
    int bias = 1, is_dir = 0;
    memset(&ts, 0, sizeof ts);
    snprintf(cfg, sizeof cfg, "%s/config.json", path);
    snprintf(file, sizeof file, "%s/params.pt", path);
    if (codi__is_regular(file)) is_dir = 1;                             /* stat first: a FIFO would block fopen */
    else if (!codi__is_regular(path)) { codi__err(err, errsz, "%s: neither a regular file nor a directory with a regular params.pt", path); return NULL; }
    if (is_dir && (text = codi_read_text(cfg, &len)) != NULL) {       /* config.json is optional */
        codi_json *j = codi_json_parse(text, len, err, errsz);
        const codi_json *b;
        double dm = 0, nl = 0;
        CODI_FREE(text);
        if (!j) { char tmp[200]; snprintf(tmp, sizeof tmp, "%s", err); codi__err(err, errsz, "%s: %s", cfg, tmp); return NULL; }
        int has_dm = codi_json_num(j, "d_model", &dm), has_nl = codi_json_num(j, "num_hidden_layers", &nl);   /* both read */
        if ((has_dm && dm != m->config.dim) || (has_nl && nl != m->config.n_layers)) {
            codi__err(err, errsz, "%s: lens for d_model %.0f, %.0f layers; the model has d_model %d, %d layers", cfg, dm, nl, m->config.dim, m->config.n_layers);
            codi_json_free(j); return NULL;
        }
        if ((b = codi_json_get(j, "bias")) != NULL && b->type == CODI_JSON_FALSE) bias = 0;
        codi_json_free(j);
    }
    if (!is_dir) snprintf(file, sizeof file, "%s", path);
    if ((codi__ends_with(file, ".safetensors") ? codi__read_safetensors(&ts, file, 0, err, errsz)
                                               : codi__read_torch_zip(&ts, file, 0, 1, err, errsz)) != 0) goto fail;
    if (!(t = codi_tuned_lens_new(m))) { codi__err(err, errsz, "out of memory"); goto fail; }
    if (codi__tuned_lens_from(t, &ts, bias, file, err, errsz)) goto fail;
    codi__tensors_free(&ts);
    return t;
fail:
    codi_tuned_lens_free(t);
    codi__tensors_free(&ts);
    return NULL;
}

/* >>acts: activation datasets written in place ------------------------------------------------ */

enum { CODI__A_GOLD, CODI__A_PRED, CODI__A_RESID, CODI__A_FINAL, CODI__A_LATENT, CODI__A_KEY, CODI__A_KEY_PRE, CODI__A_VALUE,
       CODI__A_POS, CODI__A_PLEN, CODI__A_PIDS, CODI__A_AIDS, CODI__A_QIDX, CODI__A_CORRECT, CODI__A_DONE, CODI__A_COUNT };

struct codi_acts {
    FILE *fp;
    int Q, P, L, D, N, Tmax, A, KVH, HD, bf16, kv;
    codi_config config;                /* the model's: RoPE settings for key_pre_rope */
    int64_t shape[CODI__A_COUNT][6];   /* [0] = ndim */
    int esize[CODI__A_COUNT];          /* bytes per element; 0 = tensor absent */
    long off[CODI__A_COUNT];           /* absolute file offset of each tensor's data */
    long total;                        /* file size */
    unsigned char *done;               /* [Q] */
    int failed;
};

static const char *const codi__acts_names[CODI__A_COUNT] = {
    "gold", "prediction", "resid", "final", "latent_inputs", "key", "key_pre_rope", "value", "positions", "prompt_len",
    "prompt_ids", "answer_ids", "question_index", "correct", "done" };

static const char *codi__acts_dtype(const codi_acts *a, int k) {
    if (k <= CODI__A_PRED) return "F64";
    if (k <= CODI__A_VALUE) return a->bf16 ? "BF16" : "F32";
    if (k <= CODI__A_QIDX) return "I32";
    return "U8";
}

static void codi__acts_shape(codi_acts *a, int k, int nd, int64_t d0, int64_t d1, int64_t d2, int64_t d3, int64_t d4) {
    a->shape[k][0] = nd; a->shape[k][1] = d0; a->shape[k][2] = d1; a->shape[k][3] = d2; a->shape[k][4] = d3; a->shape[k][5] = d4;
}

static int64_t codi__acts_row_elems(const codi_acts *a, int k) {
    int64_t n = 1; int d;
    for (d = 2; d <= a->shape[k][0]; d++) n *= a->shape[k][d];
    return n;
}

/* The header JSON for a spec (metadata strings escaped); NULL when out of memory. */
static char *codi__acts_header(codi_acts *a, const codi_acts_spec *sp, size_t *len) {
    const char *meta[30];
    char num[6][24];
    codi__buf b = { NULL, 0, 0, 1 };
    size_t sizes[CODI__A_COUNT], offs[CODI__A_COUNT], total, pad;
    long off;
    int k, i, d;
    snprintf(num[0], sizeof num[0], "%d", sp->n_latent); snprintf(num[1], sizeof num[1], "%d", a->L);
    snprintf(num[2], sizeof num[2], "%d", a->D); snprintf(num[3], sizeof num[3], "%d", sp->kv ? 1 : 0);
    i = 0;
    meta[i++] = "format"; meta[i++] = "codi_lens.acts.v1";
    meta[i++] = "model"; meta[i++] = sp->model ? sp->model : "";
    meta[i++] = "questions"; meta[i++] = sp->questions ? sp->questions : "";
    meta[i++] = "positions"; meta[i++] = sp->positions ? sp->positions : "";
    meta[i++] = "labels"; meta[i++] = sp->labels_json ? sp->labels_json : "[]";
    meta[i++] = "n_latent"; meta[i++] = num[0];
    meta[i++] = "recipe"; meta[i++] = sp->recipe ? sp->recipe : "";
    meta[i++] = "dtype"; meta[i++] = sp->bf16 ? "bf16" : "f32";
    meta[i++] = "layers"; meta[i++] = num[1];
    meta[i++] = "dim"; meta[i++] = num[2];
    meta[i++] = "kv"; meta[i++] = num[3];
    meta[i++] = "version"; meta[i++] = CODI_LENS_VERSION;
    meta[i++] = "command"; meta[i++] = sp->command ? sp->command : "";
    if (sp->questions_hash) { meta[i++] = "questions_hash"; meta[i++] = sp->questions_hash; }
    if (sp->work) { meta[i++] = "work"; meta[i++] = sp->work; }
    codi__buf_put(&b, "{\"__metadata__\":{", 17);
    for (k = 0; k < i; k += 2) {
        if (k) codi__buf_byte(&b, ',');
        codi__buf_json_string(&b, meta[k]); codi__buf_byte(&b, ':'); codi__buf_json_string(&b, meta[k + 1]);
    }
    codi__buf_byte(&b, '}');
    for (k = 0; k < CODI__A_COUNT; k++) sizes[k] = a->esize[k] ? (size_t)codi__acts_row_elems(a, k) * (size_t)a->shape[k][1] * a->esize[k] : 0;
    total = codi__st_layout(sizes, CODI__A_COUNT, offs);
    for (k = 0; k < CODI__A_COUNT; k++) {
        char t[512];
        int n;
        long bytes = (long)sizes[k];
        if (!a->esize[k]) continue;
        off = (long)offs[k];
        n = snprintf(t, sizeof t, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", codi__acts_names[k], codi__acts_dtype(a, k));
        for (d = 1; d <= a->shape[k][0]; d++) n += snprintf(t + n, sizeof t - (size_t)n, "%s%lld", d > 1 ? "," : "", (long long)a->shape[k][d]);
        n += snprintf(t + n, sizeof t - (size_t)n, "],\"data_offsets\":[%ld,%ld]}", off, off + bytes);
        codi__buf_put(&b, t, (size_t)n);
        a->off[k] = off;
    }
    codi__buf_byte(&b, '}');
    pad = codi__st_header_pad(b.len);
    while (pad--) codi__buf_byte(&b, ' ');    /* every row 64-byte aligned (codi__st_layout) */
    if (!b.ok) { CODI_FREE(b.p); return NULL; }
    for (k = 0; k < CODI__A_COUNT; k++) a->off[k] += 8 + (long)b.len;
    a->total = 8 + (long)b.len + (long)total;
    *len = b.len;
    return (char *)b.p;
}

CODI_API codi_acts *codi_acts_open(const codi_model *m, const char *path, const codi_acts_spec *sp, int resume,
                                   char *err, size_t errsz) {
    const codi_config *c = &m->config;
    codi_acts *a;
    char *hdr = NULL;
    size_t hlen = 0;
    FILE *fp = NULL;
    int k;
    double bytes;
    if (sp->n_questions < 1 || sp->n_positions < 1 || sp->n_latent < 0 || sp->max_prompt < 1 || sp->max_answer < 1) {
        codi__err(err, errsz, "activation dataset needs questions, positions, prompt and answer lengths >= 1"); return NULL;
    }
    bytes = (double)sp->n_questions * sp->n_positions * (c->n_layers + 2.0 + (sp->kv ? 3.0 * c->n_kv_heads * c->head_dim * c->n_layers / c->dim : 0)) *
            c->dim * (sp->bf16 ? 2 : 4);
    if (bytes > (double)LONG_MAX / 2) { codi__err(err, errsz, "activation dataset of %.3g bytes is too large for this platform", bytes); return NULL; }
    if (!(a = (codi_acts *)CODI_MALLOC(sizeof *a))) { codi__err(err, errsz, "out of memory"); return NULL; }
    memset(a, 0, sizeof *a);
    a->Q = sp->n_questions; a->P = sp->n_positions; a->L = c->n_layers; a->D = c->dim; a->N = sp->n_latent;
    a->Tmax = sp->max_prompt; a->A = sp->max_answer; a->KVH = c->n_kv_heads; a->HD = c->head_dim; a->bf16 = sp->bf16; a->kv = sp->kv;
    a->config = *c;
    codi__acts_shape(a, CODI__A_GOLD, 1, a->Q, 0, 0, 0, 0);
    codi__acts_shape(a, CODI__A_PRED, 1, a->Q, 0, 0, 0, 0);
    codi__acts_shape(a, CODI__A_RESID, 4, a->Q, a->P, a->L + 1, a->D, 0);
    codi__acts_shape(a, CODI__A_FINAL, 3, a->Q, a->P, a->D, 0, 0);
    codi__acts_shape(a, CODI__A_LATENT, 3, a->Q, a->N, a->D, 0, 0);
    codi__acts_shape(a, CODI__A_KEY, 5, a->Q, a->P, a->L, a->KVH, a->HD);
    codi__acts_shape(a, CODI__A_KEY_PRE, 5, a->Q, a->P, a->L, a->KVH, a->HD);
    codi__acts_shape(a, CODI__A_VALUE, 5, a->Q, a->P, a->L, a->KVH, a->HD);
    codi__acts_shape(a, CODI__A_POS, 2, a->Q, a->P, 0, 0, 0);
    codi__acts_shape(a, CODI__A_PLEN, 1, a->Q, 0, 0, 0, 0);
    codi__acts_shape(a, CODI__A_PIDS, 2, a->Q, a->Tmax, 0, 0, 0);
    codi__acts_shape(a, CODI__A_AIDS, 2, a->Q, a->A, 0, 0, 0);
    codi__acts_shape(a, CODI__A_QIDX, 1, a->Q, 0, 0, 0, 0);
    codi__acts_shape(a, CODI__A_CORRECT, 1, a->Q, 0, 0, 0, 0);
    codi__acts_shape(a, CODI__A_DONE, 1, a->Q, 0, 0, 0, 0);
    for (k = 0; k < CODI__A_COUNT; k++) {
        const char *dt = codi__acts_dtype(a, k);
        a->esize[k] = !strcmp(dt, "F64") ? 8 : !strcmp(dt, "F32") || !strcmp(dt, "I32") ? 4 : !strcmp(dt, "BF16") ? 2 : 1;
    }
    if (!a->kv) a->esize[CODI__A_KEY] = a->esize[CODI__A_KEY_PRE] = a->esize[CODI__A_VALUE] = 0;
    if (!a->N) a->esize[CODI__A_LATENT] = 0;
    if (!(hdr = codi__acts_header(a, sp, &hlen)) || !(a->done = (unsigned char *)CODI_MALLOC((size_t)a->Q))) {
        codi__err(err, errsz, "out of memory"); goto fail;
    }
    memset(a->done, 0, (size_t)a->Q);
    if (resume && (fp = fopen(path, "r+b")) != NULL) {
        unsigned char l8[8];
        uint64_t old_len = 0;
        char *old = NULL;
        codi_json *j = NULL, *mine = NULL;
        const codi_json *mo, *mm, *e;
        long old_off[CODI__A_COUNT] = { 0 }, old_total = 0;
        int same = 1;
        if (fread(l8, 1, 8, fp) == 8) for (k = 7; k >= 0; k--) old_len = (old_len << 8) | l8[k];
        if (old_len == 0 || old_len >= (64u << 20) || !(old = (char *)CODI_MALLOC((size_t)old_len)) ||
            fread(old, 1, (size_t)old_len, fp) != old_len || !(j = codi_json_parse(old, (size_t)old_len, err, errsz)) ||
            !(mine = codi_json_parse(hdr, hlen, err, errsz))) {
            CODI_FREE(old); codi_json_free(j); codi_json_free(mine);
            codi__err(err, errsz, "%s exists but is not a readable activation dataset; remove it or choose another --out", path);
            goto fail;
        }
        CODI_FREE(old);
        mo = codi_json_get(j, "__metadata__"); mm = codi_json_get(mine, "__metadata__");
        for (e = mm ? mm->child : NULL; e && same; e = e->next) {
            const codi_json *x = mo ? codi_json_get(mo, e->key) : NULL;
            if (!strcmp(e->key, "command") || !strcmp(e->key, "version")) continue;
            if (!strcmp(e->key, "questions_hash") && !x) continue;   /* recorded before datasets kept the hash */
            if (!x || x->type != CODI_JSON_STR || strcmp(x->str, e->str) != 0) {
                codi__err(err, errsz, "%s was recorded with %s = \"%.60s\", not \"%.60s\"; remove it or record to another file",
                          path, e->key, x && x->type == CODI_JSON_STR ? x->str : "(none)", e->str);
                codi_json_free(j); codi_json_free(mine); goto fail;
            }
        }
        for (k = 0; k < CODI__A_COUNT && same; k++) {   /* every tensor as large, where that file has it (datasets
                                                           before 64-byte alignment kept the tensors in this order) */
            const codi_json *x = codi_json_get(j, codi__acts_names[k]), *o2 = x ? codi_json_get(x, "data_offsets") : NULL;
            double size = (double)codi__acts_row_elems(a, k) * (double)a->shape[k][1] * a->esize[k];
            if (!a->esize[k]) continue;
            if (!o2 || o2->type != CODI_JSON_ARR || o2->count != 2 || o2->child->type != CODI_JSON_NUM || o2->child->next->type != CODI_JSON_NUM ||
                o2->child->next->num - o2->child->num != size || o2->child->num < 0 || o2->child->num > 1e15) { same = 0; break; }
            old_off[k] = 8 + (long)old_len + (long)o2->child->num;
            if (old_off[k] + (long)size > old_total) old_total = old_off[k] + (long)size;
        }
        codi_json_free(j); codi_json_free(mine);
        if (!same) { codi__err(err, errsz, "%s has other shapes than this command would record; remove it or record to another file", path); goto fail; }
        for (k = 0; k < CODI__A_COUNT; k++) a->off[k] = old_off[k];   /* its own layout */
        a->total = old_total;
        if (fseek(fp, 0, SEEK_END) != 0 || ftell(fp) != a->total) { codi__err(err, errsz, "%s is truncated", path); goto fail; }
        if (fseek(fp, a->off[CODI__A_DONE], SEEK_SET) != 0 || fread(a->done, 1, (size_t)a->Q, fp) != (size_t)a->Q) {
            codi__err(err, errsz, "%s is truncated", path); goto fail;
        }
    } else {
        unsigned char l8[8], zero = 0;
        for (k = 0; k < 8; k++) l8[k] = (unsigned char)(((uint64_t)hlen >> (8 * k)) & 255u);
        if (!(fp = fopen(path, "w+b"))) { codi__err(err, errsz, "cannot create %s", path); goto fail; }
        if (fwrite(l8, 1, 8, fp) != 8 || fwrite(hdr, 1, hlen, fp) != hlen || fseek(fp, a->total - 1, SEEK_SET) != 0 ||
            fwrite(&zero, 1, 1, fp) != 1 || fflush(fp) != 0) {
            codi__err(err, errsz, "cannot write %s (disk full?)", path); remove(path); goto fail;   /* no empty dataset blocks a rerun */
        }
    }
    CODI_FREE(hdr);
    a->fp = fp;
    return a;
fail:
    if (fp) fclose(fp);
    CODI_FREE(hdr); CODI_FREE(a->done); CODI_FREE(a);
    return NULL;
}

CODI_API int codi_acts_done(const codi_acts *a, int q) { return q >= 0 && q < a->Q && a->done[q]; }

CODI_API int codi_acts_count_done(const codi_acts *a) {
    int q, n = 0;
    for (q = 0; q < a->Q; q++) n += a->done[q] != 0;
    return n;
}

/* Writes row q of tensor k from src (f32 for float tensors, converted to bf16 when asked;
   int32 / double / bytes as given), count elements then zeros up to the row size. */
static int codi__acts_put(codi_acts *a, int k, int q, const void *src, int64_t count, unsigned char *tmp) {
    int64_t n = codi__acts_row_elems(a, k), i;
    int es = a->esize[k];
    if (!es) return 0;
    memset(tmp, 0, (size_t)(n * es));
    if (k <= CODI__A_PRED || k >= CODI__A_POS || !a->bf16) {
        if (src && count) memcpy(tmp, src, (size_t)(count * es));
        if (k >= CODI__A_PIDS && k <= CODI__A_AIDS) for (i = count; i < n; i++) ((int32_t *)(void *)tmp)[i] = -1;
    } else if (src)
        for (i = 0; i < count; i++) {
            uint16_t h = codi__f32_to_bf16(((const float *)src)[i]);
            memcpy(tmp + 2 * i, &h, 2);
        }
    if (fseek(a->fp, a->off[k] + (long)(q * n * es), SEEK_SET) != 0 || fwrite(tmp, (size_t)es, (size_t)n, a->fp) != (size_t)n) return -1;
    return 0;
}

CODI_API int codi_acts_write(codi_acts *a, int q, const codi_acts_row *r, char *err, size_t errsz) {
    size_t most = 0;
    unsigned char *tmp, one = 1, corr = (unsigned char)(r->correct != 0);
    int32_t plen = r->n_prompt, qidx = r->question_index;
    int k, rc = 0;
    if (q < 0 || q >= a->Q) { codi__err(err, errsz, "row %d out of range [0, %d)", q, a->Q); return -1; }
    if (r->n_prompt > a->Tmax || r->n_answer > a->A || r->n_prompt < 0 || r->n_answer < 0) {
        codi__err(err, errsz, "row %d: %d prompt / %d answer ids exceed the dataset's %d / %d", q, r->n_prompt, r->n_answer, a->Tmax, a->A);
        return -1;
    }
    for (k = 0; k < CODI__A_COUNT; k++) if ((size_t)(codi__acts_row_elems(a, k) * a->esize[k]) > most) most = (size_t)(codi__acts_row_elems(a, k) * a->esize[k]);
    if (!(tmp = (unsigned char *)CODI_MALLOC(most))) { codi__err(err, errsz, "out of memory"); return -1; }
    rc |= codi__acts_put(a, CODI__A_GOLD, q, &r->gold, 1, tmp);
    rc |= codi__acts_put(a, CODI__A_PRED, q, &r->prediction, 1, tmp);
    rc |= codi__acts_put(a, CODI__A_RESID, q, r->resid, r->resid ? codi__acts_row_elems(a, CODI__A_RESID) : 0, tmp);
    rc |= codi__acts_put(a, CODI__A_FINAL, q, r->final, r->final ? codi__acts_row_elems(a, CODI__A_FINAL) : 0, tmp);
    rc |= codi__acts_put(a, CODI__A_LATENT, q, r->latent_inputs, r->latent_inputs ? codi__acts_row_elems(a, CODI__A_LATENT) : 0, tmp);
    rc |= codi__acts_put(a, CODI__A_KEY, q, r->key, r->key ? codi__acts_row_elems(a, CODI__A_KEY) : 0, tmp);
    if (a->kv && r->key && r->positions) {       /* key_pre_rope: each key rotated back by its position */
        int64_t n = codi__acts_row_elems(a, CODI__A_KEY), per = (int64_t)a->L * a->KVH * a->HD;
        float *pre = (float *)CODI_MALLOC((size_t)n * sizeof(float));
        int p;
        if (!pre) { CODI_FREE(tmp); codi__err(err, errsz, "out of memory"); return -1; }
        memcpy(pre, r->key, (size_t)n * sizeof(float));
        for (p = 0; p < a->P; p++)
            if (r->positions[p] >= 0) codi__rope_rotate(&a->config, r->positions[p], 1, pre + p * per, a->L * a->KVH);
            else memset(pre + p * per, 0, (size_t)per * sizeof(float));
        rc |= codi__acts_put(a, CODI__A_KEY_PRE, q, pre, n, tmp);
        CODI_FREE(pre);
    } else rc |= codi__acts_put(a, CODI__A_KEY_PRE, q, NULL, 0, tmp);
    rc |= codi__acts_put(a, CODI__A_VALUE, q, r->value, r->value ? codi__acts_row_elems(a, CODI__A_VALUE) : 0, tmp);
    rc |= codi__acts_put(a, CODI__A_POS, q, r->positions, r->positions ? a->P : 0, tmp);
    rc |= codi__acts_put(a, CODI__A_PLEN, q, &plen, 1, tmp);
    rc |= codi__acts_put(a, CODI__A_PIDS, q, r->prompt_ids, r->n_prompt, tmp);
    rc |= codi__acts_put(a, CODI__A_AIDS, q, r->answer_ids, r->n_answer, tmp);
    rc |= codi__acts_put(a, CODI__A_QIDX, q, &qidx, 1, tmp);
    rc |= codi__acts_put(a, CODI__A_CORRECT, q, &corr, 1, tmp);
    CODI_FREE(tmp);
    if (rc || fflush(a->fp) != 0 || fseek(a->fp, a->off[CODI__A_DONE] + q, SEEK_SET) != 0 ||
        fwrite(&one, 1, 1, a->fp) != 1 || fflush(a->fp) != 0) {
        a->failed = 1; codi__err(err, errsz, "writing row %d failed (disk full?)", q); return -1;
    }
    a->done[q] = 1;
    return 0;
}

CODI_API int codi_acts_close(codi_acts *a, char *err, size_t errsz) {
    int rc;
    if (!a) return 0;
    rc = (fclose(a->fp) != 0 || a->failed) ? -1 : 0;
    if (rc) codi__err(err, errsz, "the activation dataset was not written completely");
    CODI_FREE(a->done); CODI_FREE(a);
    return rc;
}

CODI_API void codi_acts_gather(const codi_model *m, codi_state *s, const int32_t *positions, int P,
                               float *resid, float *final, float *key, float *value) {
    const codi_config *c = &m->config;
    size_t D = (size_t)c->dim, L = (size_t)c->n_layers, KV = (size_t)c->n_kv_heads * c->head_dim;
    int p, l, h;
    for (p = 0; p < P; p++) {
        int pos = positions[p], ok = pos >= 0 && pos < s->n_pos;
        float *r = resid + (size_t)p * (L + 1) * D;
        for (l = 0; l <= (int)L; l++) {
            if (ok) memcpy(r + l * D, codi_state_resid(s, l, pos), D * sizeof(float));
            else memset(r + l * D, 0, D * sizeof(float));
        }
        if (final) {
            if (ok) codi_rmsnorm(final + p * D, r + L * D, m->w.final_norm, (int)D, c->norm_eps);
            else memset(final + p * D, 0, D * sizeof(float));
        }
        for (l = 0; l < (int)L; l++)
            for (h = 0; h < c->n_kv_heads; h++) {
                size_t o = ((size_t)p * L + l) * KV + (size_t)h * c->head_dim;
                if (key) { if (ok) memcpy(key + o, codi_state_key(s, l, h, pos), (size_t)c->head_dim * sizeof(float)); else memset(key + o, 0, (size_t)c->head_dim * sizeof(float)); }
                if (value) { if (ok) memcpy(value + o, codi_state_value(s, l, h, pos), (size_t)c->head_dim * sizeof(float)); else memset(value + o, 0, (size_t)c->head_dim * sizeof(float)); }
            }
    }
}

enum { CODI__AD_Q, CODI__AD_P, CODI__AD_L1, CODI__AD_D, CODI__AD_N, CODI__AD_L, CODI__AD_KVH, CODI__AD_HD, CODI__AD_T,
       CODI__AD_A, CODI__AD_COUNT };

CODI_API int codi_acts_check(const codi_safetensors_file *f, const codi_model *m, char *err, size_t errsz) {
    static const char dims[CODI__A_COUNT][6] = {   /* per tensor (codi__acts_names order): rank, then its dimensions */
        { 1, CODI__AD_Q }, { 1, CODI__AD_Q }, { 4, CODI__AD_Q, CODI__AD_P, CODI__AD_L1, CODI__AD_D }, { 3, CODI__AD_Q, CODI__AD_P, CODI__AD_D },
        { 3, CODI__AD_Q, CODI__AD_N, CODI__AD_D }, { 5, CODI__AD_Q, CODI__AD_P, CODI__AD_L, CODI__AD_KVH, CODI__AD_HD },
        { 5, CODI__AD_Q, CODI__AD_P, CODI__AD_L, CODI__AD_KVH, CODI__AD_HD }, { 5, CODI__AD_Q, CODI__AD_P, CODI__AD_L, CODI__AD_KVH, CODI__AD_HD },
        { 2, CODI__AD_Q, CODI__AD_P }, { 1, CODI__AD_Q },
        { 2, CODI__AD_Q, CODI__AD_T }, { 2, CODI__AD_Q, CODI__AD_A }, { 1, CODI__AD_Q }, { 1, CODI__AD_Q }, { 1, CODI__AD_Q } };
    static const char *const dim_names[CODI__AD_COUNT] = { "Q", "P", "L+1", "D", "N", "L", "KVH", "HD", "Tmax", "A" };
    int64_t v[CODI__AD_COUNT];
    const char *meta[2];
    int k, d;
    for (d = 0; d < CODI__AD_COUNT; d++) v[d] = -1;
    for (k = 0; k < CODI__A_COUNT; k++) {
        codi_safetensors_tensor t;
        const char *dt;
        int ok;
        if (codi_safetensors_find(f, codi__acts_names[k], &t)) continue;
        dt = t.dtype;
        ok = k <= CODI__A_PRED ? !strcmp(dt, "F64") : k <= CODI__A_VALUE ? !strcmp(dt, "F32") || !strcmp(dt, "BF16") || !strcmp(dt, "F16")
                                                                        : !strcmp(dt, "I32") || !strcmp(dt, "U8");
        if (!ok) { codi__err(err, errsz, "tensor \"%s\" has dtype %s", t.name, dt); return -1; }
        if (t.ndim != dims[k][0]) { codi__err(err, errsz, "tensor \"%s\" has %d dimensions, not %d", t.name, t.ndim, dims[k][0]); return -1; }
        for (d = 0; d < t.ndim; d++) {
            int sym = dims[k][d + 1];
            if (t.shape[d] > INT_MAX) { codi__err(err, errsz, "tensor \"%s\": dimension %d (%s) = %lld is too large", t.name, d, dim_names[sym], (long long)t.shape[d]); return -1; }
            if (v[sym] >= 0 && v[sym] != t.shape[d]) {
                codi__err(err, errsz, "tensor \"%s\": dimension %d (%s) is %lld, other tensors say %lld", t.name, d, dim_names[sym],
                          (long long)t.shape[d], (long long)v[sym]);
                return -1;
            }
            v[sym] = t.shape[d];
        }
    }
    if (v[CODI__AD_L1] >= 0 && v[CODI__AD_L] >= 0 && v[CODI__AD_L1] != v[CODI__AD_L] + 1) {
        codi__err(err, errsz, "tensor \"resid\" has %lld layer rows, key / value %lld layers", (long long)v[CODI__AD_L1], (long long)v[CODI__AD_L]); return -1;
    }
    if (v[CODI__AD_L1] == 0) { codi__err(err, errsz, "tensor \"resid\" has no layer rows"); return -1; }
    if ((double)(v[CODI__AD_Q] > 0 ? v[CODI__AD_Q] : 1) * (double)(v[CODI__AD_P] > 0 ? v[CODI__AD_P] : 1) * (double)(v[CODI__AD_L1] > 0 ? v[CODI__AD_L1] : 1) > INT_MAX) {
        codi__err(err, errsz, "%lld questions x %lld positions x %lld layer rows is too many", (long long)v[CODI__AD_Q], (long long)v[CODI__AD_P], (long long)v[CODI__AD_L1]);
        return -1;
    }
    meta[0] = codi_safetensors_metadata(f, "layers"); meta[1] = codi_safetensors_metadata(f, "dim");
    for (k = 0; k < 2; k++) {
        char *end;
        long x;
        int64_t have = k ? v[CODI__AD_D] : v[CODI__AD_L1] >= 0 ? v[CODI__AD_L1] - 1 : v[CODI__AD_L];
        if (!meta[k]) continue;
        x = strtol(meta[k], &end, 10);
        if (end == meta[k] || *end || x < 0 || x > INT_MAX || (have >= 0 && x != have)) {
            codi__err(err, errsz, "metadata \"%s\" = \"%.40s\" does not match the tensors (%lld)", k ? "dim" : "layers", meta[k], (long long)have); return -1;
        }
        if (have < 0) v[k ? CODI__AD_D : CODI__AD_L] = x;
    }
    if (m) {
        const codi_config *c = &m->config;
        int64_t L = v[CODI__AD_L1] >= 0 ? v[CODI__AD_L1] - 1 : v[CODI__AD_L];
        if ((L >= 0 && L != c->n_layers) || (v[CODI__AD_D] >= 0 && v[CODI__AD_D] != c->dim) || (v[CODI__AD_KVH] >= 0 && v[CODI__AD_KVH] != c->n_kv_heads) ||
            (v[CODI__AD_HD] >= 0 && v[CODI__AD_HD] != c->head_dim)) {
            codi__err(err, errsz, "recorded with %lld layers, dimension %lld, %lld x %lld kv heads; the model has %d, %d, %d x %d",
                      (long long)L, (long long)v[CODI__AD_D], (long long)v[CODI__AD_KVH], (long long)v[CODI__AD_HD], c->n_layers, c->dim, c->n_kv_heads, c->head_dim);
            return -1;
        }
    }
    return 0;
}

/* >>probe: logistic-regression probes on activation vectors ---------------------------------- */

/* Training is full-batch L-BFGS (10 pairs, backtracking Armijo line search) in double: the
   objective is smooth and strictly convex, so it reaches the unique optimum deterministically;
   Newton/IRLS would need the (R*(D+1))^2 Hessian, 4 * 10^7 entries for D = 2048 and K = 3. */

CODI_API codi_probe_opts codi_probe_opts_default(void) {
    codi_probe_opts o;
    o.l2 = 1e-2; o.max_iter = 1000; o.tol = 1e-6; o.standardize = 1; o.n_threads = 1;
    return o;
}

CODI_API void codi_probe_free(codi_probe *p) {
    if (!p) return;
    CODI_FREE(p->mean); CODI_FREE(p->scale); CODI_FREE(p->weight); CODI_FREE(p->bias);
    CODI_FREE(p);
}

static codi_probe *codi__probe_alloc(int dim, int n_classes) {
    codi_probe *p = (codi_probe *)CODI_MALLOC(sizeof *p);
    int rows = n_classes == 2 ? 1 : n_classes;
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    p->dim = dim; p->n_classes = n_classes; p->n_rows = rows;
    p->mean = (float *)CODI_MALLOC((size_t)dim * sizeof(float));
    p->scale = (float *)CODI_MALLOC((size_t)dim * sizeof(float));
    p->weight = (float *)CODI_MALLOC((size_t)rows * dim * sizeof(float));
    p->bias = (float *)CODI_MALLOC((size_t)rows * sizeof(float));
    if (!p->mean || !p->scale || !p->weight || !p->bias) { codi_probe_free(p); return NULL; }
    return p;
}

/* The training problem: rows x [n, D] read raw; the standardisation is folded into the weights.
   Rows are summed in fixed chunks (partial sums added in chunk order), so the objective is the
   same bits however many threads share the chunks. */
#define CODI__LOGREG_CHUNK 256
typedef struct {
    const float *x; const int32_t *y; int n, dim, rows;
    const double *mean, *scale;   /* [D] */
    double l2;
    double *eff;                  /* [rows, D+1] weights and bias on raw x */
    double *partial;              /* [chunks, rows * (D+1) + 1] per chunk: sum_i r_ik x_i, sum_i r_ik, loss */
    codi__pool *pool;
} codi__logreg;

/* w . x [n] for double w and float x, with eight partial sums */
static double codi__dot_df(const double *w, const float *x, int n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s;
    int j = 0, k;
    for (; j + 8 <= n; j += 8) for (k = 0; k < 8; k++) acc[k] += w[j + k] * x[j + k];
    s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; j < n; j++) s += w[j] * x[j];
    return s;
}

/* Loss and raw gradient sums of chunks [start, end) into lr->partial. */
static void codi__logreg_chunks(void *ctx, int tid, int start, int end) {
    const codi__logreg *lr = (const codi__logreg *)ctx;
    int D = lr->dim, R = lr->rows, c, i, k, j;
    size_t W = (size_t)D + 1, P = (size_t)R * W + 1;
    double z[256];
    (void)tid;
    for (c = start; c < end; c++) {
        double *g = lr->partial + (size_t)c * P, f = 0;
        int i1 = (c + 1) * CODI__LOGREG_CHUNK < lr->n ? (c + 1) * CODI__LOGREG_CHUNK : lr->n;
        memset(g, 0, P * sizeof(double));
        for (i = c * CODI__LOGREG_CHUNK; i < i1; i++) {
            const float *x = lr->x + (size_t)i * D;
            int y = lr->y[i];
            for (k = 0; k < R; k++) z[k] = lr->eff[k * W + D] + codi__dot_df(lr->eff + k * W, x, D);
            if (R == 1) {                             /* log(1 + e^z) - y z, residual sigmoid(z) - y */
                double t = z[0];
                f += (t > 0 ? t + log1p(exp(-t)) : log1p(exp(t))) - (y == 1 ? t : 0);
                z[0] = (t >= 0 ? 1 / (1 + exp(-t)) : exp(t) / (1 + exp(t))) - (y == 1);
            } else {                                  /* logsumexp(z) - z_y, residual softmax(z) - onehot(y) */
                double mx = z[0], sum = 0;
                for (k = 1; k < R; k++) if (z[k] > mx) mx = z[k];
                for (k = 0; k < R; k++) sum += exp(z[k] - mx);
                f += mx + log(sum) - z[y];
                for (k = 0; k < R; k++) z[k] = exp(z[k] - mx) / sum - (k == y);
            }
            for (k = 0; k < R; k++) {
                double r = z[k], *gk = g + k * W;
                if (r == 0) continue;
                for (j = 0; j < D; j++) gk[j] += r * x[j];
                gk[D] += r;
            }
        }
        g[P - 1] = f;
    }
}

/* Objective and gradient g at theta [rows, D+1] (weights on standardised x, then bias). */
static double codi__logreg_eval(codi__logreg *lr, const double *theta, double *g) {
    int D = lr->dim, R = lr->rows, k, j, c, n_chunks = (lr->n + CODI__LOGREG_CHUNK - 1) / CODI__LOGREG_CHUNK;
    size_t W = (size_t)D + 1, P = (size_t)R * W + 1, i;
    double f = 0, reg = 0;
    for (k = 0; k < R; k++) {                        /* effective weights on raw x */
        double b = theta[k * W + D];
        for (j = 0; j < D; j++) {
            double w = theta[k * W + j] / lr->scale[j];
            lr->eff[k * W + j] = w; b -= w * lr->mean[j];
        }
        lr->eff[k * W + D] = b;
    }
    CODI__PARALLEL(lr->pool, codi__logreg_chunks, lr, n_chunks);
    memset(g, 0, (size_t)R * W * sizeof(double));    /* g first holds sum_i r_ik x_i and sum_i r_ik */
    for (c = 0; c < n_chunks; c++) {
        const double *pc = lr->partial + (size_t)c * P;
        for (i = 0; i + 1 < P; i++) g[i] += pc[i];
        f += pc[P - 1];
    }
    for (k = 0; k < R; k++) {                         /* chain rule through the standardisation */
        double *gk = g + k * W;
        for (j = 0; j < D; j++) {
            double w = theta[k * W + j];
            gk[j] = (gk[j] - lr->mean[j] * gk[D]) / lr->scale[j] / lr->n + lr->l2 * w;
            reg += w * w;
        }
        gk[D] /= lr->n;
    }
    return f / lr->n + 0.5 * lr->l2 * reg;
}

static double codi__max_abs(const double *v, size_t n) {
    double m = 0; size_t i;
    for (i = 0; i < n; i++) if (fabs(v[i]) > m) m = fabs(v[i]);
    return m;
}

static double codi__ddot(const double *a, const double *b, size_t n) {
    double s = 0; size_t i;
    for (i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Minimises the objective from theta = 0; fills p's weights, bias, iterations, loss. */
static int codi__logreg_lbfgs(codi__logreg *lr, const codi_probe_opts *o, codi_probe *p) {
    enum { M = 10 };
    size_t W = (size_t)lr->dim + 1, np = (size_t)lr->rows * W, i;
    double *buf = (double *)CODI_MALLOC((5 + 2 * M) * np * sizeof(double)), rho[M], alpha[M];
    double *th, *g, *d, *th2, *g2, *S, *Y, f, f2 = 0;
    int it, k, head = 0, used = 0, j;
    if (!buf) return -1;
    th = buf; g = th + np; d = g + np; th2 = d + np; g2 = th2 + np; S = g2 + np; Y = S + M * np;
    memset(th, 0, np * sizeof(double));
    f = codi__logreg_eval(lr, th, g);
    for (it = 0; it < o->max_iter && codi__max_abs(g, np) > o->tol; it++) {
        double step, gd, q;
        for (i = 0; i < np; i++) d[i] = -g[i];        /* two-loop recursion: d = -H g */
        for (j = 0; j < used; j++) {
            k = (head - 1 - j + M) % M;
            alpha[k] = rho[k] * codi__ddot(S + k * np, d, np);
            for (i = 0; i < np; i++) d[i] -= alpha[k] * Y[k * np + i];
        }
        if (used) {
            k = (head - 1 + M) % M;
            q = codi__ddot(S + k * np, Y + k * np, np) / codi__ddot(Y + k * np, Y + k * np, np);
            for (i = 0; i < np; i++) d[i] *= q;
        }
        for (j = used - 1; j >= 0; j--) {
            double beta;
            k = (head - 1 - j + M) % M;
            beta = rho[k] * codi__ddot(Y + k * np, d, np);
            for (i = 0; i < np; i++) d[i] += (alpha[k] - beta) * S[k * np + i];
        }
        gd = codi__ddot(g, d, np);
        if (!(gd < 0)) { for (i = 0; i < np; i++) d[i] = -g[i]; gd = -codi__ddot(g, g, np); used = 0; }
        step = used ? 1.0 : 1.0 / sqrt(-gd);
        for (j = 0; j < 60; j++, step *= 0.5) {       /* Armijo backtracking */
            for (i = 0; i < np; i++) th2[i] = th[i] + step * d[i];
            f2 = codi__logreg_eval(lr, th2, g2);
            if (f2 <= f + 1e-4 * step * gd) break;
        }
        if (j == 60) break;                           /* no decrease left at double precision */
        k = head;
        for (i = 0; i < np; i++) { S[k * np + i] = th2[i] - th[i]; Y[k * np + i] = g2[i] - g[i]; }
        q = codi__ddot(S + k * np, Y + k * np, np);
        if (q > 1e-300) { rho[k] = 1 / q; head = (head + 1) % M; if (used < M) used++; }
        memcpy(th, th2, np * sizeof(double)); memcpy(g, g2, np * sizeof(double)); f = f2;
    }
    p->iterations = it; p->loss = f; p->converged = codi__max_abs(g, np) <= o->tol;
    for (k = 0; k < lr->rows; k++) {
        for (j = 0; j < lr->dim; j++) p->weight[(size_t)k * lr->dim + j] = (float)th[k * W + j];
        p->bias[k] = (float)th[k * W + lr->dim];
    }
    CODI_FREE(buf);
    return 0;
}

CODI_API codi_probe *codi_probe_train(const float *x, const int32_t *y, int n, int dim, int n_classes,
                                      const codi_probe_opts *o, char *err, size_t errsz) {
    codi_probe_opts def = codi_probe_opts_default();
    codi__logreg lr;
    codi_probe *p = NULL;
    double *stats = NULL;
    int *count = NULL, i, j, rc = -1, n_chunks;
    if (!o) o = &def;
    if (n <= 0 || dim <= 0) { codi__err(err, errsz, "probe: empty training set (%d rows of dimension %d)", n, dim); return NULL; }
    if (n_classes < 2 || n_classes > 256) { codi__err(err, errsz, "probe: %d class(es); a probe needs 2..256", n_classes); return NULL; }
    if (!(o->l2 >= 0) || o->max_iter < 1 || !(o->tol > 0)) { codi__err(err, errsz, "probe: l2 must be >= 0, max_iter >= 1, tol > 0"); return NULL; }
    if (!(count = (int *)CODI_MALLOC((size_t)n_classes * sizeof(int)))) { codi__err(err, errsz, "out of memory"); return NULL; }
    memset(count, 0, (size_t)n_classes * sizeof(int));
    for (i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= n_classes) { codi__err(err, errsz, "probe: label %d of row %d is outside 0..%d", (int)y[i], i, n_classes - 1); goto done; }
        count[y[i]]++;
    }
    for (i = 0; i < n_classes; i++)
        if (!count[i]) { codi__err(err, errsz, "probe: class %d has no training rows (every class needs at least one)", i); goto done; }
    for (i = 0; i < n; i++) for (j = 0; j < dim; j++)
        if (!isfinite(x[(size_t)i * dim + j])) { codi__err(err, errsz, "probe: non-finite value at row %d, column %d", i, j); goto done; }
    p = codi__probe_alloc(dim, n_classes);
    n_chunks = (n + CODI__LOGREG_CHUNK - 1) / CODI__LOGREG_CHUNK;
    stats = p ? (double *)CODI_MALLOC(((size_t)2 * dim + (size_t)p->n_rows * (dim + 1) * (1 + (size_t)n_chunks) + (size_t)n_chunks) * sizeof(double)) : NULL;
    if (!p || !stats) { codi__err(err, errsz, "out of memory"); goto done; }
    for (j = 0; j < dim; j++) { stats[j] = 0; stats[dim + j] = 1; }
    if (o->standardize) {                             /* two passes: mean, then population std */
        for (j = 0; j < dim; j++) stats[dim + j] = 0;
        for (i = 0; i < n; i++) for (j = 0; j < dim; j++) stats[j] += x[(size_t)i * dim + j];
        for (j = 0; j < dim; j++) stats[j] /= n;
        for (i = 0; i < n; i++) for (j = 0; j < dim; j++) { double v = x[(size_t)i * dim + j] - stats[j]; stats[dim + j] += v * v; }
        for (j = 0; j < dim; j++) { double sd = sqrt(stats[dim + j] / n); stats[dim + j] = sd > 0 ? sd : 1; }
    }
    for (j = 0; j < dim; j++) { p->mean[j] = (float)stats[j]; p->scale[j] = (float)stats[dim + j]; }
    for (j = 0; j < dim; j++) { stats[j] = p->mean[j]; stats[dim + j] = p->scale[j]; }  /* train with what is stored */
    lr.x = x; lr.y = y; lr.n = n; lr.dim = dim; lr.rows = p->n_rows;
    lr.mean = stats; lr.scale = stats + dim; lr.l2 = o->l2;
    lr.eff = stats + 2 * dim; lr.partial = lr.eff + (size_t)p->n_rows * (dim + 1); lr.pool = NULL;
    p->l2 = o->l2;
#ifdef CODI_THREADS
    if (o->n_threads > 1) lr.pool = codi__pool_new(o->n_threads);
#endif
    rc = codi__logreg_lbfgs(&lr, o, p);
#ifdef CODI_THREADS
    codi__pool_free(lr.pool);
#endif
    if (rc) codi__err(err, errsz, "out of memory");
done:
    CODI_FREE(count); CODI_FREE(stats);
    if (rc) { codi_probe_free(p); return NULL; }
    return p;
}

CODI_API void codi_probe_predict_proba(const codi_probe *p, const float *x, int n, float *proba) {
    int i, k, j, D = p->dim, K = p->n_classes;
    for (i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D;
        double z[256], mx, sum = 0;
        float *out = proba + (size_t)i * K;
        for (k = 0; k < p->n_rows; k++) {
            const float *w = p->weight + (size_t)k * D;
            double s = p->bias[k];
            for (j = 0; j < D; j++) s += (double)w[j] * ((xi[j] - p->mean[j]) / p->scale[j]);
            z[k] = s;
        }
        if (p->n_rows == 1) {
            double p1 = z[0] >= 0 ? 1 / (1 + exp(-z[0])) : exp(z[0]) / (1 + exp(z[0]));
            out[0] = (float)(1 - p1); out[1] = (float)p1;
            continue;
        }
        for (mx = z[0], k = 1; k < K; k++) if (z[k] > mx) mx = z[k];
        for (k = 0; k < K; k++) sum += exp(z[k] - mx);
        for (k = 0; k < K; k++) out[k] = (float)(exp(z[k] - mx) / sum);
    }
}

typedef struct { float score; int positive; } codi__scored;
static int codi__scored_cmp(const void *a, const void *b) {
    float x = ((const codi__scored *)a)->score, y = ((const codi__scored *)b)->score;
    return (x > y) - (x < y);
}

CODI_API double codi_roc_auc(const float *score, const int32_t *positive, int n, double *se) {
    codi__scored *v;
    double rank_sum = 0, auc, n1 = 0, n0, q1, q2;
    int i, j;
    if (se) *se = NAN;
    if (n <= 0 || !(v = (codi__scored *)CODI_MALLOC((size_t)n * sizeof *v))) return NAN;
    for (i = 0; i < n; i++) { v[i].score = score[i]; v[i].positive = positive[i] != 0; n1 += v[i].positive; }
    n0 = n - n1;
    if (n1 == 0 || n0 == 0) { CODI_FREE(v); return NAN; }
    qsort(v, (size_t)n, sizeof *v, codi__scored_cmp);
    for (i = 0; i < n; i = j) {                       /* Mann-Whitney: mean rank over each run of ties */
        int pos = 0;
        for (j = i; j < n && v[j].score == v[i].score; j++) pos += v[j].positive;
        rank_sum += pos * 0.5 * (i + 1 + j);
    }
    CODI_FREE(v);
    auc = (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0);
    q1 = auc / (2 - auc); q2 = 2 * auc * auc / (1 + auc);
    if (se) *se = sqrt(fmax(0, (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0)));
    return auc;
}

/* >>stats ------------------------------------------------------------------------------ */
CODI_API void codi_wilson_interval(int k, int n, double z, double *lo, double *hi) {
    double p, den, mid, half;
    if (n <= 0) { *lo = 0; *hi = 1; return; }
    p = (double)k / n; den = 1 + z * z / n;
    mid = (p + z * z / (2.0 * n)) / den;
    half = z / den * sqrt(p * (1 - p) / n + z * z / (4.0 * n * n));
    *lo = fmax(0, mid - half); *hi = fmin(1, mid + half);
}

CODI_API double codi_mcnemar_exact(long b, long c) {
    long n = b + c, k = b < c ? b : c, i;
    double p = 0, log_half_n = -(double)n * log(2.0), lg_n1 = lgamma((double)n + 1);
    if (b < 0 || c < 0) return NAN;
    if (n == 0) return 1;
    for (i = 0; i <= k; i++) p += exp(lg_n1 - lgamma((double)i + 1) - lgamma((double)(n - i) + 1) + log_half_n);
    return fmin(1, 2 * p);
}

CODI_API void codi_paired_diff_interval(long b, long c, long n, double *lo, double *hi) {
    double z = 1.959963984540054, p12 = (b + 1.0) / (n + 2.0), p21 = (c + 1.0) / (n + 2.0), d = p21 - p12;
    double se = sqrt(fmax(0, (p12 + p21 - d * d) / (n + 2.0)));
    *lo = fmax(-1, d - z * se); *hi = fmin(1, d + z * se);
}

/* Indices of the finite entries of p, sorted by p (ties by index); their count in *m. */
static int *codi__sorted_p(const double *p, int n, int *m) {
    int *ix = (int *)CODI_MALLOC(sizeof(int) * (size_t)(n > 0 ? n : 1)), i, j, t;
    if (!ix) return NULL;
    for (i = *m = 0; i < n; i++) if (p[i] == p[i]) ix[(*m)++] = i;
    for (i = 1; i < *m; i++)                     /* insertion sort: families are small, stable */
        for (j = i; j > 0 && p[ix[j - 1]] > p[ix[j]]; j--) { t = ix[j]; ix[j] = ix[j - 1]; ix[j - 1] = t; }
    return ix;
}

CODI_API int codi_holm(const double *p, int n, double *out) {
    int m, i, *ix = codi__sorted_p(p, n, &m);
    double run = 0, *adj;
    if (!ix) return -1;
    adj = (double *)CODI_MALLOC(sizeof(double) * (size_t)(m > 0 ? m : 1));
    if (!adj) { CODI_FREE(ix); return -1; }
    for (i = 0; i < m; i++) {                    /* (m - i) p_(i), made monotone, capped at 1 */
        double a = fmin(1, (double)(m - i) * p[ix[i]]);
        run = a > run ? a : run;
        adj[i] = run;
    }
    for (i = 0; i < n; i++) if (p[i] != p[i]) out[i] = NAN;
    for (i = 0; i < m; i++) out[ix[i]] = adj[i];
    CODI_FREE(adj); CODI_FREE(ix);
    return 0;
}

CODI_API int codi_bh(const double *p, int n, double *out) {
    int m, i, *ix = codi__sorted_p(p, n, &m);
    double run = 1, *adj;
    if (!ix) return -1;
    adj = (double *)CODI_MALLOC(sizeof(double) * (size_t)(m > 0 ? m : 1));
    if (!adj) { CODI_FREE(ix); return -1; }
    for (i = m - 1; i >= 0; i--) {               /* m p_(i) / (i + 1), minimum from the top */
        double a = fmin(1, (double)m * p[ix[i]] / (i + 1));
        run = a < run ? a : run;
        adj[i] = run;
    }
    for (i = 0; i < n; i++) if (p[i] != p[i]) out[i] = NAN;
    for (i = 0; i < m; i++) out[ix[i]] = adj[i];
    CODI_FREE(adj); CODI_FREE(ix);
    return 0;
}

/* x >= 0 with tail(x) = q, q in (0, 0.5], tail decreasing from tail(0) = 0.5: bracket by doubling,
   then bisection to a relative 1e-15. Searching the tail keeps the precision of q near 0 and 1. */
static double codi__tail_inverse(double (*tail)(double x, double arg), double arg, double q) {
    double lo = 0, hi = 1;
    int i;
    if (q >= 0.5) return 0;
    while (tail(hi, arg) > q && hi < 1e300) { lo = hi; hi *= 2; }
    for (i = 0; i < 2000 && hi - lo > 1e-15 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (tail(mid, arg) > q) lo = mid; else hi = mid;
    }
    return 0.5 * (lo + hi);
}

static double codi__normal_tail(double x, double unused) { (void)unused; return 0.5 * erfc(x / sqrt(2.0)); }

CODI_API double codi_normal_quantile(double p) {
    if (!(p > 0 && p < 1)) return p == 0 ? -INFINITY : p == 1 ? INFINITY : NAN;
    return p < 0.5 ? -codi__tail_inverse(codi__normal_tail, 0, p) : codi__tail_inverse(codi__normal_tail, 0, 1 - p);
}

/* Regularized incomplete beta I_x(a, b) by its continued fraction (modified Lentz). */
static double codi__beta_cf(double a, double b, double x) {
    double c = 1, d = 1 - (a + b) * x / (a + 1), h, tiny = 1e-300;
    int m;
    if (fabs(d) < tiny) d = tiny;
    d = 1 / d; h = d;
    for (m = 1; m <= 100000; m++) {
        double m2 = 2.0 * m, num = m * (b - m) * x / ((a + m2 - 1) * (a + m2)), del;
        d = 1 + num * d; if (fabs(d) < tiny) d = tiny;
        c = 1 + num / c; if (fabs(c) < tiny) c = tiny;
        d = 1 / d; h *= d * c;
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
        d = 1 + num * d; if (fabs(d) < tiny) d = tiny;
        c = 1 + num / c; if (fabs(c) < tiny) c = tiny;
        d = 1 / d; del = d * c; h *= del;
        if (fabs(del - 1) < 1e-16) break;
    }
    return h;
}

/* I_x(a, b) with y = 1 - x given separately (exact where x is near 1). */
static double codi__beta_inc(double a, double b, double x, double y) {
    double front;
    if (x <= 0) return 0;
    if (y <= 0) return 1;
    front = exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * (x < 0.5 ? log(x) : log1p(-y)) + b * (y < 0.5 ? log(y) : log1p(-x)));
    return x < (a + 1) / (a + b + 2) ? front * codi__beta_cf(a, b, x) / a : 1 - front * codi__beta_cf(b, a, y) / b;
}

/* Student's t upper tail P(T > t) for t >= 0: I_(df / (df + t^2))(df / 2, 1/2) / 2. */
static double codi__t_tail(double t, double df) {
    double t2 = t * t;
    return 0.5 * codi__beta_inc(df / 2, 0.5, df / (df + t2), t2 / (df + t2));
}

CODI_API double codi_t_quantile(double p, double df) {
    if (!(p > 0 && p < 1) || !(df > 0)) return NAN;
    return p < 0.5 ? -codi__tail_inverse(codi__t_tail, df, p) : codi__tail_inverse(codi__t_tail, df, 1 - p);
}

/* Mean and sample standard error of x [n]; -1 on a non-finite entry. */
static int codi__mean_se(const double *x, long n, double *mean, double *se) {
    double s = 0, ss = 0;
    long i;
    for (i = 0; i < n; i++) { if (!isfinite(x[i])) return -1; s += x[i]; }
    *mean = n > 0 ? s / n : NAN;
    for (i = 0; i < n; i++) ss += (x[i] - *mean) * (x[i] - *mean);
    *se = n > 1 ? sqrt(ss / (n - 1) / n) : NAN;
    return 0;
}

CODI_API int codi_mean_interval(const double *x, long n, codi_mean_ci *out) {
    double q;
    out->n = n; out->mean = out->se = out->lo = out->hi = NAN;
    if (codi__mean_se(x, n, &out->mean, &out->se)) { out->mean = NAN; return -1; }
    if (n < 2) return 0;
    q = codi_t_quantile(0.975, (double)(n - 1));
    out->lo = out->mean - q * out->se; out->hi = out->mean + q * out->se;
    return 0;
}

static int codi__cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

CODI_API int codi_bootstrap_mean(const double *x, long n, int n_boot, uint64_t seed, codi_mean_ci *out) {
    double *means;
    codi_rng rng;
    int b;
    out->n = n; out->mean = out->se = out->lo = out->hi = NAN;
    if (codi__mean_se(x, n, &out->mean, &out->se)) { out->mean = NAN; return -1; }
    if (n < 2 || n_boot < 2) return 0;
    if (!(means = (double *)CODI_MALLOC(sizeof(double) * (size_t)n_boot))) return -1;
    codi_rng_seed(&rng, seed);
    for (b = 0; b < n_boot; b++) {               /* n draws with replacement, their mean */
        double s = 0;
        long i;
        for (i = 0; i < n; i++) s += x[(long)(codi_rng_uniform(&rng) * n)];
        means[b] = s / n;
    }
    qsort(means, (size_t)n_boot, sizeof(double), codi__cmp_double);
    out->lo = means[(int)floor(0.025 * (n_boot - 1))]; out->hi = means[(int)ceil(0.975 * (n_boot - 1))];
    CODI_FREE(means);
    return 0;
}

CODI_API int codi_probe_metrics_of(const float *proba, const int32_t *y, int n, int k, codi_probe_metrics *out,
                                   char *err, size_t errsz) {
    float *score = NULL;
    int32_t *pos = NULL;
    int i, c, correct = 0, used = 0;
    double auc_sum = 0, var_sum = 0, ll = 0;
    if (n <= 0 || k < 2) { codi__err(err, errsz, "probe metrics: %d rows, %d classes (need rows and >= 2 classes)", n, k); return -1; }
    for (i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= k) { codi__err(err, errsz, "probe metrics: label %d of row %d is outside 0..%d", (int)y[i], i, k - 1); return -1; }
    score = (float *)CODI_MALLOC((size_t)n * sizeof(float));
    pos = (int32_t *)CODI_MALLOC((size_t)n * sizeof(int32_t));
    if (!score || !pos) { CODI_FREE(score); CODI_FREE(pos); codi__err(err, errsz, "out of memory"); return -1; }
    for (i = 0; i < n; i++) {
        const float *pr = proba + (size_t)i * k;
        int best = 0;
        for (c = 1; c < k; c++) if (pr[c] > pr[best]) best = c;
        correct += best == y[i];
        ll -= log(fmax(pr[y[i]], 1e-15));
    }
    for (c = k == 2 ? 1 : 0; c < k; c++) {            /* binary: class 1's score; else one-vs-rest */
        double se, a;
        for (i = 0; i < n; i++) { score[i] = proba[(size_t)i * k + c]; pos[i] = y[i] == c; }
        a = codi_roc_auc(score, pos, n, &se);
        if (a != a) continue;
        auc_sum += a; var_sum += se * se; used++;
    }
    CODI_FREE(score); CODI_FREE(pos);
    out->n = n;
    out->accuracy = (double)correct / n;
    codi_wilson_interval(correct, n, 1.96, &out->acc_lo, &out->acc_hi);
    out->log_loss = ll / n;
    if (used) {
        double half = 1.96 * sqrt(var_sum) / used;
        out->auc = auc_sum / used; out->auc_lo = fmax(0, out->auc - half); out->auc_hi = fmin(1, out->auc + half);
    } else out->auc = out->auc_lo = out->auc_hi = NAN;
    return 0;
}

/* metadata for the writer: {"codi_lens", kind, extra..., NULL} in out (cap entries); NULL if too many. */
static const char **codi__with_kind(const char **out, int cap, const char *kind, const char *const *extra) {
    int n = 0;
    out[n++] = "codi_lens"; out[n++] = kind;
    while (extra && *extra) {
        if (n + 3 > cap) return NULL;
        out[n++] = *extra++; out[n++] = *extra ? *extra++ : "";
    }
    out[n] = NULL;
    return out;
}

CODI_API int codi_probe_save(const char *path, const codi_probe *const *probes, const char *const *names, int n,
                             const char *const *metadata, char *err, size_t errsz) {
    codi_safetensors_entry *e;
    char *nm;
    const char *meta[66];
    int i, rc;
    if (n <= 0) { codi__err(err, errsz, "probe save: no probes"); return -1; }
    if (!codi__with_kind(meta, 66, "probe.v1", metadata)) { codi__err(err, errsz, "probe save: more than 31 metadata pairs"); return -1; }
    e = (codi_safetensors_entry *)CODI_MALLOC((size_t)n * 4 * sizeof *e);
    nm = (char *)CODI_MALLOC((size_t)n * 4 * 256);
    if (!e || !nm) { CODI_FREE(e); CODI_FREE(nm); codi__err(err, errsz, "out of memory"); return -1; }
    memset(e, 0, (size_t)n * 4 * sizeof *e);
    for (i = 0; i < n; i++) {
        const codi_probe *p = probes[i];
        static const char *const part[4] = { "mean", "scale", "weight", "bias" };
        const float *data[4];
        int k;
        data[0] = p->mean; data[1] = p->scale; data[2] = p->weight; data[3] = p->bias;
        for (k = 0; k < 4; k++) {
            codi_safetensors_entry *t = &e[i * 4 + k];
            snprintf(nm + (size_t)(i * 4 + k) * 256, 256, "%s.%s", names[i], part[k]);
            t->name = nm + (size_t)(i * 4 + k) * 256; t->dtype = CODI_F32; t->data = data[k];
            t->ndim = k == 2 ? 2 : 1;
            t->shape[0] = k < 2 ? p->dim : p->n_rows;
            t->shape[1] = p->dim;
        }
    }
    rc = codi_write_safetensors(path, e, n * 4, meta, err, errsz);
    CODI_FREE(e); CODI_FREE(nm);
    return rc;
}

/* Reads NAME.part of f as float32 into a new buffer of exactly want elements (want < 0: any
   count, returned in *got). NULL with a message. */
static float *codi__st_floats(const codi_safetensors_file *f, const char *name, const char *part, long want, long *got,
                              char *err, size_t errsz) {
    char full[300];
    codi_safetensors_tensor t;
    float *v;
    size_t i;
    snprintf(full, sizeof full, "%s.%s", name, part);
    if (codi_safetensors_find(f, full, &t)) { codi__err(err, errsz, "tensor %s is missing", full); return NULL; }
    if (want >= 0 && (long)t.numel != want) { codi__err(err, errsz, "tensor %s has %lu values; %ld expected", full, (unsigned long)t.numel, want); return NULL; }
    if (!(v = (float *)CODI_MALLOC((t.numel ? t.numel : 1) * sizeof(float)))) { codi__err(err, errsz, "out of memory"); return NULL; }
    if (codi_safetensors_read_f32(f, full, v, t.numel, err, errsz) < 0) { CODI_FREE(v); return NULL; }
    for (i = 0; i < t.numel; i++)
        if (!isfinite(v[i])) { CODI_FREE(v); codi__err(err, errsz, "tensor %s: non-finite value at %lu", full, (unsigned long)i); return NULL; }
    if (got) *got = (long)t.numel;
    return v;
}

CODI_API codi_probe *codi_probe_load(const char *path, const char *name, char *err, size_t errsz) {
    char sub[256];
    codi_safetensors_file *f = codi_safetensors_open(path, err, errsz);
    codi_safetensors_tensor w;
    codi_probe *p = NULL;
    const char *fmt;
    long D, R;
    int j;
    if (!f) return NULL;
    fmt = codi_safetensors_metadata(f, "codi_lens");
    snprintf(sub, sizeof sub, "%s.weight", name);
    if (!fmt || strcmp(fmt, "probe.v1")) { codi__err(err, errsz, "%s: not a probe file (codi_lens metadata: %s)", path, fmt ? fmt : "missing"); goto fail; }
    if (codi_safetensors_find(f, sub, &w)) { codi__err(err, errsz, "%s: no probe named '%s'", path, name); goto fail; }
    if (w.ndim != 2 || w.shape[0] < 1 || w.shape[0] == 2 || w.shape[0] > 256 || w.shape[1] < 1 || w.shape[1] > (1 << 24)) {
        codi__err(err, errsz, "%s: %s must be [1 or 3..256 rows, D]", path, sub); goto fail;
    }
    R = (long)w.shape[0]; D = (long)w.shape[1];
    if (!(p = (codi_probe *)CODI_MALLOC(sizeof *p))) { codi__err(err, errsz, "out of memory"); goto fail; }
    memset(p, 0, sizeof *p);
    p->dim = (int)D; p->n_rows = (int)R; p->n_classes = R == 1 ? 2 : (int)R;
    if (!(p->mean = codi__st_floats(f, name, "mean", D, NULL, err, errsz)) ||
        !(p->scale = codi__st_floats(f, name, "scale", D, NULL, err, errsz)) ||
        !(p->weight = codi__st_floats(f, name, "weight", R * D, NULL, err, errsz)) ||
        !(p->bias = codi__st_floats(f, name, "bias", R, NULL, err, errsz))) goto fail;
    for (j = 0; j < D; j++) if (!(p->scale[j] > 0)) { codi__err(err, errsz, "%s: %s.scale[%d] is not positive", path, name, j); goto fail; }
    p->converged = 1;
    codi_safetensors_close(f);
    return p;
fail:
    codi_probe_free(p); codi_safetensors_close(f);
    return NULL;
}

/* >>pca: covariance, a symmetric eigensolver, projections and the lens along a direction ------- */

#define CODI__PCA_BLOCK 64   /* rows per covariance update; fixed, so sums never depend on call sizes */

struct codi_pca_acc {
    int dim;
    long n;             /* rows added */
    int pending;        /* rows waiting in block */
    double *shift;      /* [D] the first row added: sums are of x - shift, so no cancellation */
    double *sum;        /* [D] sum of (x - shift) */
    double *cross;      /* [D, D] lower triangle: sum of (x - shift)(x - shift)^T over flushed blocks */
    double *block;      /* [BLOCK, D] pending rows minus shift; unused rows are 0 */
    codi__pool *pool;   /* workers, or NULL */
};

CODI_API codi_pca_acc *codi_pca_acc_new(int dim, int n_threads, char *err, size_t errsz) {
    codi_pca_acc *a;
    size_t D = dim > 0 ? (size_t)dim : 0;
    if (dim <= 0 || dim > 65536) { codi__err(err, errsz, "pca: dimension %d is outside 1..65536", dim); return NULL; }
    if (!(a = (codi_pca_acc *)CODI_MALLOC(sizeof *a))) { codi__err(err, errsz, "out of memory"); return NULL; }
    memset(a, 0, sizeof *a);
    a->dim = dim;
    a->shift = (double *)CODI_MALLOC(D * sizeof(double));
    a->sum = (double *)CODI_MALLOC(D * sizeof(double));
    a->cross = (double *)CODI_MALLOC(D * D * sizeof(double));
    a->block = (double *)CODI_MALLOC(D * CODI__PCA_BLOCK * sizeof(double));
    if (!a->shift || !a->sum || !a->cross || !a->block) { codi_pca_acc_free(a); codi__err(err, errsz, "out of memory for a %d x %d covariance", dim, dim); return NULL; }
    memset(a->sum, 0, D * sizeof(double));
    memset(a->cross, 0, D * D * sizeof(double));
    memset(a->block, 0, D * CODI__PCA_BLOCK * sizeof(double));
#ifdef CODI_THREADS
    if (n_threads > 1) a->pool = codi__pool_new(n_threads);
#else
    (void)n_threads;
#endif
    return a;
}

CODI_API void codi_pca_acc_free(codi_pca_acc *a) {
    if (!a) return;
    CODI_FREE(a->shift); CODI_FREE(a->sum); CODI_FREE(a->cross); CODI_FREE(a->block);
#ifdef CODI_THREADS
    codi__pool_free(a->pool);
#endif
    CODI_FREE(a);
}

CODI_API long codi_pca_acc_rows(const codi_pca_acc *a) { return a->n; }

/* The double-precision loops below copy x through a small local array so the compiler may
   vectorise them without proving that x and y do not overlap; each element's operations keep
   a fixed order, so results are the same on every run. */

/* y [n] += a * x [n] */
static void codi__axpy_d(double *y, double a, const double *x, int n) {
    double t[8];
    int j = 0, k;
    for (; j + 8 <= n; j += 8) {
        for (k = 0; k < 8; k++) t[k] = x[j + k];
        for (k = 0; k < 8; k++) y[j + k] += a * t[k];
    }
    for (; j < n; j++) y[j] += a * x[j];
}

/* y [n] -= a * x [n] + b * z [n] */
static void codi__rank2_d(double *y, double a, const double *x, double b, const double *z, int n) {
    double t[8], u[8];
    int j = 0, k;
    for (; j + 8 <= n; j += 8) {
        for (k = 0; k < 8; k++) { t[k] = x[j + k]; u[k] = z[j + k]; }
        for (k = 0; k < 8; k++) y[j + k] -= a * t[k] + b * u[k];
    }
    for (; j < n; j++) y[j] -= a * x[j] + b * z[j];
}

/* (x, y) [n] <- (c x - s y, s x + c y): a Givens rotation of two rows */
static void codi__rotate_d(double *x, double *y, double c, double s, int n) {
    double t[8], u[8];
    int j = 0, k;
    for (; j + 8 <= n; j += 8) {
        for (k = 0; k < 8; k++) { t[k] = x[j + k]; u[k] = y[j + k]; }
        for (k = 0; k < 8; k++) { x[j + k] = c * t[k] - s * u[k]; y[j + k] = s * t[k] + c * u[k]; }
    }
    for (; j < n; j++) { double a = x[j], b = y[j]; x[j] = c * a - s * b; y[j] = s * a + c * b; }
}

/* x . y [n] with eight partial sums */
static double codi__dot_d(const double *x, const double *y, int n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s;
    int j = 0, k;
    for (; j + 8 <= n; j += 8) for (k = 0; k < 8; k++) acc[k] += x[j + k] * y[j + k];
    s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; j < n; j++) s += x[j] * y[j];
    return s;
}

/* cross (lower triangle) += block^T block over the BLOCK rows, in L1-sized tiles; work units
   [start, end) of CODI__SYRK_UNITS map to row ranges of about equal triangle area. */
#define CODI__SYRK_UNITS 1024
typedef struct { double *cross; const double *block; int D; } codi__syrk_task;

static int codi__syrk_row(int unit, int D) {   /* first row of a unit, a multiple of 16 */
    int r = (int)(D * sqrt((double)unit / CODI__SYRK_UNITS));
    return unit >= CODI__SYRK_UNITS ? D : r - r % 16;
}

static void codi__pca_syrk_rows(void *ctx, int tid, int start, int end) {
    enum { TI = 16, TJ = 128 };
    const codi__syrk_task *t = (const codi__syrk_task *)ctx;
    double *cross = t->cross;
    const double *block = t->block;
    int D = t->D, i0, j0, i, r, i_end = codi__syrk_row(end, D);
    (void)tid;
    for (i0 = codi__syrk_row(start, D); i0 < i_end; i0 += TI)
        for (j0 = 0; j0 < i0 + TI && j0 < D; j0 += TJ)
            for (r = 0; r < CODI__PCA_BLOCK; r++) {
                const double *b = block + (size_t)r * D;
                for (i = i0; i < i0 + TI && i < D; i++) {
                    int j1 = j0 + TJ < i + 1 ? j0 + TJ : i + 1;
                    if (j1 > j0 && b[i] != 0) codi__axpy_d(cross + (size_t)i * D + j0, b[i], b + j0, j1 - j0);
                }
            }
}

static void codi__pca_block_syrk(double *cross, const double *block, int D, codi__pool *pool) {
    codi__syrk_task t;
    t.cross = cross; t.block = block; t.D = D;
    (void)pool;
    CODI__PARALLEL(pool, codi__pca_syrk_rows, &t, CODI__SYRK_UNITS);
}

CODI_API int codi_pca_acc_add(codi_pca_acc *a, const float *x, int n, char *err, size_t errsz) {
    int D = a->dim, i, j;
    for (i = 0; i < n; i++) for (j = 0; j < D; j++)
        if (!isfinite(x[(size_t)i * D + j])) { codi__err(err, errsz, "pca: non-finite value at row %d, column %d", i, j); return -1; }
    for (i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D;
        if (a->n == 0) for (j = 0; j < D; j++) a->shift[j] = xi[j];
        for (j = 0; j < D; j++) {
            double v = xi[j] - a->shift[j];
            a->sum[j] += v;
            a->block[(size_t)a->pending * D + j] = v;
        }
        a->n++;
        if (++a->pending == CODI__PCA_BLOCK) {
            codi__pca_block_syrk(a->cross, a->block, D, a->pool);
            memset(a->block, 0, (size_t)D * CODI__PCA_BLOCK * sizeof(double));
            a->pending = 0;
        }
    }
    return 0;
}

/* The row- and column-parallel steps of the eigensolver: rows (or columns) [start, end) of the
   trailing block at offset k+1 of an n x n matrix. */
typedef struct {
    double *mat; const double *v; double *p; int n, k; double beta;
    const double *rot_c, *rot_s; int rot_first, rot_count;   /* QL: rotations of rows i, i+1 */
} codi__eig_task;

static void codi__eig_matvec(void *ctx, int tid, int start, int end) {   /* p = beta A2 v */
    const codi__eig_task *t = (const codi__eig_task *)ctx;
    int i, m = t->n - t->k - 1;
    (void)tid;
    for (i = start; i < end; i++) t->p[i] = t->beta * codi__dot_d(t->mat + (size_t)(t->k + 1 + i) * t->n + t->k + 1, t->v, m);
}

static void codi__eig_rank2(void *ctx, int tid, int start, int end) {    /* A2 -= v w^T + w v^T */
    const codi__eig_task *t = (const codi__eig_task *)ctx;
    int i, m = t->n - t->k - 1;
    (void)tid;
    for (i = start; i < end; i++) codi__rank2_d(t->mat + (size_t)(t->k + 1 + i) * t->n + t->k + 1, t->v[i], t->p, t->p[i], t->v, m);
}

static void codi__eig_vtq(void *ctx, int tid, int start, int end) {      /* p = v^T Q2, columns [start, end) */
    const codi__eig_task *t = (const codi__eig_task *)ctx;
    int i, m = t->n - t->k - 1;
    (void)tid;
    for (i = start; i < end; i++) t->p[i] = 0;
    for (i = 0; i < m; i++) codi__axpy_d(t->p + start, t->v[i], t->mat + (size_t)(t->k + 1 + i) * t->n + t->k + 1 + start, end - start);
}

static void codi__eig_qupdate(void *ctx, int tid, int start, int end) {  /* Q2 -= beta v p^T */
    const codi__eig_task *t = (const codi__eig_task *)ctx;
    int i, m = t->n - t->k - 1;
    (void)tid;
    for (i = start; i < end; i++) codi__axpy_d(t->mat + (size_t)(t->k + 1 + i) * t->n + t->k + 1, -t->beta * t->v[i], t->p, m);
}

static void codi__eig_rotate(void *ctx, int tid, int start, int end) {   /* a QL sweep's rotations, columns [start, end) */
    const codi__eig_task *t = (const codi__eig_task *)ctx;
    int r;
    (void)tid;
    for (r = 0; r < t->rot_count; r++) {
        int i = t->rot_first - r;
        codi__rotate_d(t->mat + (size_t)i * t->n + start, t->mat + (size_t)(i + 1) * t->n + start, t->rot_c[i], t->rot_s[i], end - start);
    }
}

/* a [n, n] symmetric (full) -> tridiagonal d [n], e [n] (e[i] couples i and i+1, e[n-1] = 0)
   by Householder reflections H_k; q [n, n] gets Q = H_0 ... H_(n-3) (A = Q T Q^T). a is destroyed. */
static void codi__tridiagonalize(double *a, int n, double *d, double *e, double *q, double *tmp, codi__pool *pool) {
    int k, i, j;
    double *beta = tmp, *p = tmp + n;
    codi__eig_task t;
    memset(&t, 0, sizeof t);
    (void)pool;
    for (k = 0; k + 2 < n; k++) {
        double *v = a + (size_t)k * n + k + 1, sigma = 0, x0 = v[0], norm, alpha, pv = 0, K;
        int m = n - k - 1;
        for (i = 1; i < m; i++) sigma += v[i] * v[i];
        d[k] = a[(size_t)k * n + k];
        if (sigma == 0) { beta[k] = 0; e[k] = x0; continue; }
        norm = sqrt(x0 * x0 + sigma);
        alpha = x0 <= 0 ? norm : -norm;              /* v0 = x0 - alpha without cancellation */
        v[0] = x0 - alpha;
        beta[k] = 2 / (v[0] * v[0] + sigma);
        e[k] = alpha;
        t.mat = a; t.v = v; t.p = p; t.n = n; t.k = k; t.beta = beta[k];
        CODI__PARALLEL(pool, codi__eig_matvec, &t, m);   /* p = beta A2 v over the trailing block A2 */
        for (i = 0; i < m; i++) pv += p[i] * v[i];
        K = 0.5 * beta[k] * pv;
        for (i = 0; i < m; i++) p[i] -= K * v[i];     /* w = p - K v; A2 -= v w^T + w v^T */
        CODI__PARALLEL(pool, codi__eig_rank2, &t, m);
    }
    if (n >= 2) { d[n - 2] = a[(size_t)(n - 2) * n + n - 2]; e[n - 2] = a[(size_t)(n - 2) * n + n - 1]; }
    d[n - 1] = a[(size_t)(n - 1) * n + n - 1]; e[n - 1] = 0;
    for (i = 0; i < n; i++) for (j = 0; j < n; j++) q[(size_t)i * n + j] = i == j;
    for (k = n - 3; k >= 0; k--) {                    /* Q = H_k (H_(k+1) ... ) acting on rows/cols > k */
        const double *v = a + (size_t)k * n + k + 1;
        int m = n - k - 1;
        if (beta[k] == 0) continue;
        t.mat = q; t.v = v; t.p = p; t.n = n; t.k = k; t.beta = beta[k];
        CODI__PARALLEL(pool, codi__eig_vtq, &t, m);
        CODI__PARALLEL(pool, codi__eig_qupdate, &t, m);
    }
}

/* Implicit QL with Wilkinson shifts on tridiagonal (d, e); each rotation of rows i, i+1 of
   zt [n, n] (rows: Q's columns) accumulates the eigenvectors. d gets the eigenvalues. An
   off-diagonal entry counts as zero below eps times its neighbours or eps times the norm of T
   (rank-deficient covariances have clusters of eigenvalues near 0). */
static int codi__tridiagonal_ql(double *d, double *e, int n, double *zt, double *rot, codi__pool *pool) {
    int l, m, i, iter;
    double norm = 0;
    codi__eig_task t;
    memset(&t, 0, sizeof t);
    t.mat = zt; t.n = n; t.rot_c = rot; t.rot_s = rot + n;
    (void)pool;
    for (i = 0; i < n; i++) norm = fmax(norm, fabs(d[i]) + fabs(e[i]) + (i ? fabs(e[i - 1]) : 0));
    for (l = 0; l < n; l++) {
        for (iter = 0;; iter++) {
            double g, r, s, c, p, f, b;
            int split = 0;
            for (m = l; m + 1 < n; m++)
                if (fabs(e[m]) <= DBL_EPSILON * (fabs(d[m]) + fabs(d[m + 1])) || fabs(e[m]) <= DBL_EPSILON * norm) break;
            if (m == l) break;
            if (iter == 60) return -1;
            g = (d[l + 1] - d[l]) / (2 * e[l]);
            r = hypot(g, 1);
            g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
            s = c = 1; p = 0;
            for (i = m - 1; i >= l; i--) {
                f = s * e[i]; b = c * e[i];
                r = hypot(f, g); e[i + 1] = r;
                if (r == 0) { d[i + 1] -= p; e[m] = 0; split = 1; break; }
                s = f / r; c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2 * c * b;
                p = s * r; d[i + 1] = g + p;
                g = c * r - b;
                rot[i] = c; rot[n + i] = s;           /* applied to zt after the sweep, in this order */
            }
            t.rot_first = m - 1; t.rot_count = m - 1 - i;
            if (t.rot_count > 0) CODI__PARALLEL(pool, codi__eig_rotate, &t, n);
            if (split) continue;
            d[l] -= p; e[l] = g; e[m] = 0;
        }
    }
    return 0;
}

static int codi__sym_eigen(const double *a, int n, codi__pool *pool, double *values, double *vectors, char *err, size_t errsz) {
    size_t nn = (size_t)n * n, i, j;
    double *w, *zt, *d, *e, *tmp;
    int *order, r, c;
    if (n <= 0) { codi__err(err, errsz, "eigen: empty matrix"); return -1; }
    for (i = 0; i < (size_t)n; i++) for (j = 0; j <= i; j++)
        if (!isfinite(a[i * n + j])) { codi__err(err, errsz, "eigen: non-finite entry (%d, %d)", (int)i, (int)j); return -1; }
    w = (double *)CODI_MALLOC((2 * nn + 6 * (size_t)n) * sizeof(double));
    order = (int *)CODI_MALLOC((size_t)n * sizeof(int));
    if (!w || !order) { CODI_FREE(w); CODI_FREE(order); codi__err(err, errsz, "eigen: out of memory for n = %d", n); return -1; }
    zt = w + nn; d = zt + nn; e = d + n; tmp = e + n;
    for (i = 0; i < (size_t)n; i++) for (j = 0; j <= i; j++) w[i * n + j] = w[j * n + i] = a[i * n + j];
    codi__tridiagonalize(w, n, d, e, vectors, tmp, pool);
    for (i = 0; i < (size_t)n; i++) for (j = 0; j < (size_t)n; j++) zt[j * n + i] = vectors[i * n + j];
    if (codi__tridiagonal_ql(d, e, n, zt, tmp, pool)) {
        CODI_FREE(w); CODI_FREE(order);
        codi__err(err, errsz, "eigen: QL iteration did not converge");
        return -1;
    }
    for (r = 0; r < n; r++) order[r] = r;             /* decreasing, stable: insertion sort on indices */
    for (r = 1; r < n; r++) {
        int t = order[r];
        for (c = r; c > 0 && d[order[c - 1]] < d[t]; c--) order[c] = order[c - 1];
        order[c] = t;
    }
    for (r = 0; r < n; r++) {
        const double *src = zt + (size_t)order[r] * n;
        double *dst = vectors + (size_t)r * n, big = 0, sign;
        int at = 0;
        for (c = 0; c < n; c++) if (fabs(src[c]) > big) { big = fabs(src[c]); at = c; }
        sign = src[at] < 0 ? -1 : 1;
        for (c = 0; c < n; c++) dst[c] = sign * src[c];
        values[r] = d[order[r]];
    }
    CODI_FREE(w); CODI_FREE(order);
    return 0;
}

CODI_API int codi_sym_eigen(const double *a, int n, int n_threads, double *values, double *vectors, char *err, size_t errsz) {
    codi__pool *pool = NULL;
    int rc;
#ifdef CODI_THREADS
    if (n_threads > 1) pool = codi__pool_new(n_threads);
#else
    (void)n_threads;
#endif
    rc = codi__sym_eigen(a, n, pool, values, vectors, err, errsz);
#ifdef CODI_THREADS
    codi__pool_free(pool);
#endif
    return rc;
}

CODI_API void codi_pca_free(codi_pca *p) {
    if (!p) return;
    CODI_FREE(p->mean); CODI_FREE(p->components); CODI_FREE(p->variance); CODI_FREE(p->explained);
    CODI_FREE(p);
}

CODI_API codi_pca *codi_pca_fit(const codi_pca_acc *a, int n_components, char *err, size_t errsz) {
    int D = a->dim, i, j, k = n_components;
    size_t DD = (size_t)D * D;
    double *cov, *vec, *val, n = (double)a->n, total = 0;
    codi_pca *p;
    if (a->n < 2) { codi__err(err, errsz, "pca: %ld row(s); PCA needs at least 2", a->n); return NULL; }
    if (k < 1 || k > D) { codi__err(err, errsz, "pca: %d components asked; 1..%d possible", k, D); return NULL; }
    cov = (double *)CODI_MALLOC((2 * DD + (size_t)D) * sizeof(double));
    p = (codi_pca *)CODI_MALLOC(sizeof *p);
    if (p) memset(p, 0, sizeof *p);
    if (!cov || !p) goto oom;
    vec = cov + DD; val = vec + DD;
    memcpy(cov, a->cross, DD * sizeof(double));
    if (a->pending) codi__pca_block_syrk(cov, a->block, D, a->pool);
    for (i = 0; i < D; i++) for (j = 0; j <= i; j++)   /* (S - sum sum^T / n) / (n - 1) */
        cov[(size_t)i * D + j] = (cov[(size_t)i * D + j] - a->sum[i] * a->sum[j] / n) / (n - 1);
    for (i = 0; i < D; i++) total += cov[(size_t)i * D + i];
    if (codi__sym_eigen(cov, D, a->pool, val, vec, err, errsz)) { CODI_FREE(cov); codi_pca_free(p); return NULL; }
    p->dim = D; p->n_components = k; p->n_rows = a->n; p->total_variance = total;
    p->mean = (float *)CODI_MALLOC((size_t)D * sizeof(float));
    p->components = (float *)CODI_MALLOC((size_t)k * D * sizeof(float));
    p->variance = (double *)CODI_MALLOC((size_t)k * sizeof(double));
    p->explained = (double *)CODI_MALLOC((size_t)k * sizeof(double));
    if (!p->mean || !p->components || !p->variance || !p->explained) goto oom;
    for (j = 0; j < D; j++) p->mean[j] = (float)(a->shift[j] + a->sum[j] / n);
    for (i = 0; i < k; i++) {
        p->variance[i] = val[i] > 0 ? val[i] : 0;      /* rounding can leave tiny negatives */
        p->explained[i] = total > 0 ? p->variance[i] / total : 0;
        for (j = 0; j < D; j++) p->components[(size_t)i * D + j] = (float)vec[(size_t)i * D + j];
    }
    CODI_FREE(cov);
    return p;
oom:
    CODI_FREE(cov); codi_pca_free(p);
    codi__err(err, errsz, "pca: out of memory for a %d x %d covariance", D, D);
    return NULL;
}

CODI_API void codi_pca_project(const codi_pca *p, const float *x, int n, float *out) {
    int i, c, j, D = p->dim;
    for (i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * D;
        for (c = 0; c < p->n_components; c++) {
            const float *v = p->components + (size_t)c * D;
            double s = 0;
            for (j = 0; j < D; j++) s += ((double)xi[j] - p->mean[j]) * v[j];
            out[(size_t)i * p->n_components + c] = (float)s;
        }
    }
}

CODI_API int codi_pca_save(const char *path, const codi_pca *const *pcas, const char *const *names, int n,
                           const char *const *metadata, char *err, size_t errsz) {
    codi_safetensors_entry *e;
    char *nm;
    double *stats;
    const char *meta[66];
    int i, rc;
    if (n <= 0) { codi__err(err, errsz, "pca save: nothing to save"); return -1; }
    if (!codi__with_kind(meta, 66, "pca.v1", metadata)) { codi__err(err, errsz, "pca save: more than 31 metadata pairs"); return -1; }
    e = (codi_safetensors_entry *)CODI_MALLOC((size_t)n * 5 * sizeof *e);
    nm = (char *)CODI_MALLOC((size_t)n * 5 * 256);
    stats = (double *)CODI_MALLOC((size_t)n * 2 * sizeof(double));
    if (!e || !nm || !stats) { CODI_FREE(e); CODI_FREE(nm); CODI_FREE(stats); codi__err(err, errsz, "out of memory"); return -1; }
    memset(e, 0, (size_t)n * 5 * sizeof *e);
    for (i = 0; i < n; i++) {
        const codi_pca *p = pcas[i];
        static const char *const part[5] = { "mean", "components", "variance", "explained", "stats" };
        const void *data[5];
        int k;
        stats[2 * i] = p->total_variance; stats[2 * i + 1] = (double)p->n_rows;
        data[0] = p->mean; data[1] = p->components; data[2] = p->variance; data[3] = p->explained; data[4] = stats + 2 * i;
        for (k = 0; k < 5; k++) {
            codi_safetensors_entry *t = &e[i * 5 + k];
            snprintf(nm + (size_t)(i * 5 + k) * 256, 256, "%s.%s", names[i], part[k]);
            t->name = nm + (size_t)(i * 5 + k) * 256; t->dtype = k < 2 ? CODI_F32 : CODI_F64; t->data = data[k];
            t->ndim = k == 1 ? 2 : 1;
            t->shape[0] = k == 0 ? p->dim : k == 4 ? 2 : p->n_components;
            t->shape[1] = p->dim;
        }
    }
    rc = codi_write_safetensors(path, e, n * 5, meta, err, errsz);
    CODI_FREE(e); CODI_FREE(nm); CODI_FREE(stats);
    return rc;
}

/* NAME.part of f as F64 [want]: a new buffer, or NULL with a message. */
static double *codi__st_doubles(const codi_safetensors_file *f, const char *name, const char *part, long want, char *err, size_t errsz) {
    char full[300];
    codi_safetensors_tensor t;
    double *v;
    long i;
    snprintf(full, sizeof full, "%s.%s", name, part);
    if (codi_safetensors_find(f, full, &t)) { codi__err(err, errsz, "tensor %s is missing", full); return NULL; }
    if (strcmp(t.dtype, "F64") || (long)t.numel != want) { codi__err(err, errsz, "tensor %s must be F64 [%ld]", full, want); return NULL; }
    if (!(v = (double *)CODI_MALLOC((size_t)want * sizeof(double)))) { codi__err(err, errsz, "out of memory"); return NULL; }
    memcpy(v, t.data, (size_t)want * sizeof(double));   /* little-endian hosts, as the whole library */
    for (i = 0; i < want; i++) if (!isfinite(v[i])) { CODI_FREE(v); codi__err(err, errsz, "tensor %s: non-finite value", full); return NULL; }
    return v;
}

CODI_API codi_pca *codi_pca_load(const char *path, const char *name, char *err, size_t errsz) {
    char sub[256];
    codi_safetensors_file *f = codi_safetensors_open(path, err, errsz);
    codi_safetensors_tensor c;
    codi_pca *p = NULL;
    double *stats = NULL;
    const char *fmt;
    long D, k;
    if (!f) return NULL;
    fmt = codi_safetensors_metadata(f, "codi_lens");
    snprintf(sub, sizeof sub, "%s.components", name);
    if (!fmt || strcmp(fmt, "pca.v1")) { codi__err(err, errsz, "%s: not a PCA file (codi_lens metadata: %s)", path, fmt ? fmt : "missing"); goto fail; }
    if (codi_safetensors_find(f, sub, &c)) { codi__err(err, errsz, "%s: no PCA named '%s'", path, name); goto fail; }
    if (c.ndim != 2 || c.shape[0] < 1 || c.shape[1] < 1 || c.shape[0] > c.shape[1] || c.shape[1] > 65536) {
        codi__err(err, errsz, "%s: %s must be [k, D] with 1 <= k <= D <= 65536", path, sub); goto fail;
    }
    k = (long)c.shape[0]; D = (long)c.shape[1];
    if (!(p = (codi_pca *)CODI_MALLOC(sizeof *p))) { codi__err(err, errsz, "out of memory"); goto fail; }
    memset(p, 0, sizeof *p);
    p->dim = (int)D; p->n_components = (int)k;
    if (!(p->mean = codi__st_floats(f, name, "mean", D, NULL, err, errsz)) ||
        !(p->components = codi__st_floats(f, name, "components", k * D, NULL, err, errsz)) ||
        !(p->variance = codi__st_doubles(f, name, "variance", k, err, errsz)) ||
        !(p->explained = codi__st_doubles(f, name, "explained", k, err, errsz)) ||
        !(stats = codi__st_doubles(f, name, "stats", 2, err, errsz))) goto fail;
    if (!(stats[1] >= 0 && stats[1] <= 2147483647.0 && stats[1] == floor(stats[1]))) {
        codi__err(err, errsz, "%s: %s.stats[1] (the row count) = %g is not a count", path, name, stats[1]); goto fail;
    }
    p->total_variance = stats[0]; p->n_rows = (long)stats[1];
    CODI_FREE(stats); codi_safetensors_close(f);
    return p;
fail:
    CODI_FREE(stats); codi_pca_free(p); codi_safetensors_close(f);
    return NULL;
}

CODI_API int codi_lens_direction(const codi_model *m, const float *base, const float *dir, float s, int normed,
                                 float *delta) {
    int D = m->config.dim, V = m->config.vocab, j;
    float *x = (float *)CODI_MALLOC(((size_t)2 * D + (size_t)V) * sizeof(float)), *ref;
    if (!x) return -1;
    ref = x + 2 * D;
    if (normed) {                                     /* lm_head is linear: s * lm_head(dir) */
        codi__matmul_range(codi__kernel_active(), delta, 0, dir, &m->w.lm_head, 1, 0, V, x + D);   /* work: D floats */
        for (j = 0; j < V; j++) delta[j] *= s;
    } else {
        for (j = 0; j < D; j++) x[j] = base[j] + s * dir[j];
        if (codi_lens_logits(m, x, delta) || codi_lens_logits(m, base, ref)) { CODI_FREE(x); return -1; }
        for (j = 0; j < V; j++) delta[j] -= ref[j];
    }
    CODI_FREE(x);
    return 0;
}

#endif /* CODI_NO_RESEARCH */

/* ======== APPENDIX A. FORMATS: JSON, files, the tensor table, safetensors, zip, pickle, loading = */

/* >>json: a small DOM JSON reader (RFC 8259) for config.json, safetensors headers,
   index files and tokenizer.json. One arena per document; strings are decoded to
   NUL-terminated UTF-8 (escapes and surrogate pairs resolved). */


typedef struct {
    const char *p, *end;
    codi_json *nodes; size_t nnodes, cap_nodes;
    char *strs; size_t nstrs, cap_strs;
    const char *err;
    int depth;
    int unique_keys;               /* refuse an object naming a member twice (codi_json_parse_strict) */
    char msg[128];                 /* err of a duplicate key, naming it */
} codi__jparser;

/* Upper bounds for the arena, from one cheap scan: every value starts a node
   at most once per byte that can begin a value, strings never grow when decoded. */
static void codi__json_count(const char *s, size_t n, size_t *nodes, size_t *bytes) {
    size_t i, c = 1;
    for (i = 0; i < n; i++) if (s[i] == ',' || s[i] == '[' || s[i] == '{' || s[i] == ':') c++;
    *nodes = c; *bytes = n + 1;
}

static void codi__json_ws(codi__jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int codi__json_hex4(const char *p, unsigned *out) {
    unsigned v = 0; int i;
    for (i = 0; i < 4; i++) {
        char c = p[i]; v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v; return 1;
}

static size_t codi__utf8_put(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) { o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63)); return 3; }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63)); return 4;
}

/* Parses a string literal at j->p (which points at the opening quote). */
static int codi__json_string(codi__jparser *j, const char **out, size_t *outlen) {
    char *o = j->strs + j->nstrs, *start = o;
    j->p++;
    for (;;) {
        char c;
        if (j->p >= j->end) { j->err = "unterminated string"; return 0; }
        c = *j->p++;
        if (c == '"') break;
        if ((unsigned char)c < 0x20) { j->err = "control character in string"; return 0; }
        if (c != '\\') { *o++ = c; continue; }
        if (j->p >= j->end) { j->err = "unterminated escape"; return 0; }
        c = *j->p++;
        switch (c) {
        case '"': *o++ = '"'; break;   case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;   case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;  case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;  case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (j->end - j->p < 4 || !codi__json_hex4(j->p, &cp)) { j->err = "bad \\u escape"; return 0; }
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
                codi__json_hex4(j->p + 2, &lo) && lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j->p += 6;
            }
            /* a 6-byte escape decodes to at most 4 bytes (a lone surrogate to 3) */
            o += codi__utf8_put(o, cp);
            break;
        }
        default: j->err = "bad escape"; return 0;
        }
    }
    *o++ = 0;
    *out = start; *outlen = (size_t)(o - start - 1);
    j->nstrs = (size_t)(o - j->strs);
    return 1;
}

static codi_json *codi__json_value(codi__jparser *j);

static codi_json *codi__json_node(codi__jparser *j, int type) {
    codi_json *n;
    if (j->nnodes >= j->cap_nodes) { j->err = "too many values"; return NULL; }
    n = &j->nodes[j->nnodes++];
    memset(n, 0, sizeof *n);
    n->type = type;
    return n;
}

static codi_json *codi__json_container(codi__jparser *j, int is_obj) {
    codi_json *n = codi__json_node(j, is_obj ? CODI_JSON_OBJ : CODI_JSON_ARR), *last = NULL;
    char close = is_obj ? '}' : ']';
    if (!n) return NULL;
    if (++j->depth > 256) { j->err = "nesting too deep"; return NULL; }
    j->p++;
    codi__json_ws(j);
    if (j->p < j->end && *j->p == close) { j->p++; j->depth--; return n; }
    for (;;) {
        codi_json *v;
        const char *key = NULL; size_t keylen = 0;
        if (is_obj) {
            codi__json_ws(j);
            if (j->p >= j->end || *j->p != '"') { j->err = "expected member name"; return NULL; }
            if (!codi__json_string(j, &key, &keylen)) return NULL;
            if (j->unique_keys) {
                const codi_json *c;
                for (c = n->child; c; c = c->next)
                    if (c->keylen == keylen && !memcmp(c->key, key, keylen)) {
                        snprintf(j->msg, sizeof j->msg, "duplicate key \"%.80s\"", key);
                        j->err = j->msg; return NULL;
                    }
            }
            codi__json_ws(j);
            if (j->p >= j->end || *j->p != ':') { j->err = "expected ':'"; return NULL; }
            j->p++;
        }
        v = codi__json_value(j);
        if (!v) return NULL;
        v->key = key; v->keylen = keylen;
        if (last) last->next = v; else n->child = v;
        last = v; n->count++;
        codi__json_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == close) { j->p++; break; }
        j->err = is_obj ? "expected ',' or '}'" : "expected ',' or ']'";
        return NULL;
    }
    j->depth--;
    return n;
}

static codi_json *codi__json_value(codi__jparser *j) {
    codi_json *n;
    codi__json_ws(j);
    if (j->p >= j->end) { j->err = "unexpected end of input"; return NULL; }
    switch (*j->p) {
    case '{': return codi__json_container(j, 1);
    case '[': return codi__json_container(j, 0);
    case '"':
        n = codi__json_node(j, CODI_JSON_STR);
        if (!n || !codi__json_string(j, &n->str, &n->len)) return NULL;
        return n;
    case 't': case 'f': case 'n': {
        static const char *words[3] = { "true", "false", "null" };
        static const int types[3] = { CODI_JSON_TRUE, CODI_JSON_FALSE, CODI_JSON_NULL };
        int w;
        for (w = 0; w < 3; w++) {
            size_t wl = strlen(words[w]);
            if ((size_t)(j->end - j->p) >= wl && memcmp(j->p, words[w], wl) == 0) {
                j->p += wl;
                return codi__json_node(j, types[w]);
            }
        }
        j->err = "bad literal"; return NULL;
    }
    default: {
        char buf[64]; size_t k = 0; char *endp;
        int digits_only = 1;
        double v = 0;
        for (; j->p + k < j->end && k < sizeof buf - 1; k++) {
            char c = j->p[k];
            if (c >= '0' && c <= '9') v = v * 10 + (c - '0');
            else if (c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E') digits_only = 0;
            else break;
            buf[k] = c;
        }
        buf[k] = 0;
        if (k == 0) { j->err = "unexpected character"; return NULL; }
        n = codi__json_node(j, CODI_JSON_NUM);
        if (!n) return NULL;
        if (digits_only && k < 16) n->num = v;   /* exact: below 2^53 */
        else {
            n->num = strtod(buf, &endp);
            if (*endp) { j->err = "bad number"; return NULL; }
            if (!(n->num - n->num == 0)) { j->err = "number out of range (not a finite double)"; return NULL; }
        }
        j->p += k;
        return n;
    }
    }
}

/* Parses text[0..len); unique_keys: an object naming a member twice is an error. Returns the
   root (free with codi_json_free) or NULL with a message in err. */
static codi_json *codi__json_parse_ex(const char *text, size_t len, int unique_keys, char *err, size_t errsz) {
    codi__jparser j;
    codi_json *root;
    memset(&j, 0, sizeof j);
    j.p = text; j.end = text + len; j.unique_keys = unique_keys;
    codi__json_count(text, len, &j.cap_nodes, &j.cap_strs);
    /* node 0 is a hidden header owning the string arena: see codi_json_free */
    j.nodes = (codi_json *)CODI_MALLOC((j.cap_nodes + 1) * sizeof(codi_json));
    j.strs = (char *)CODI_MALLOC(j.cap_strs + 4);
    if (!j.nodes || !j.strs) {
        CODI_FREE(j.nodes); CODI_FREE(j.strs);
        snprintf(err, errsz, "out of memory parsing JSON"); return NULL;
    }
    memset(&j.nodes[0], 0, sizeof(codi_json));
    j.nodes[0].str = j.strs;
    j.nodes++;
    root = codi__json_value(&j);
    if (root) {
        codi__json_ws(&j);
        if (j.p != j.end) { root = NULL; j.err = "trailing characters"; }
    }
    if (!root) {
        snprintf(err, errsz, "JSON error at byte %lu: %s", (unsigned long)(j.p - text), j.err ? j.err : "?");
        CODI_FREE(j.nodes - 1); CODI_FREE(j.strs);
        return NULL;
    }
    return root;
}

/* Files from the wild (safetensors headers, tokenizer.json): duplicate keys allowed, the first wins. */
CODI_API codi_json *codi_json_parse(const char *text, size_t len, char *err, size_t errsz) {
    return codi__json_parse_ex(text, len, 0, err, errsz);
}

/* Files people write (steering specs, config.json, questions lines): a duplicate key is an error. */
CODI_API codi_json *codi_json_parse_strict(const char *text, size_t len, char *err, size_t errsz) {
    return codi__json_parse_ex(text, len, 1, err, errsz);
}

CODI_API void codi_json_free(codi_json *root) {
    if (!root) return;
    CODI_FREE((void *)root[-1].str);
    CODI_FREE(root - 1);
}

/* Member `key` of object `o`, or NULL. */
CODI_API const codi_json *codi_json_get(const codi_json *o, const char *key) {
    const codi_json *c;
    size_t kl = strlen(key);
    if (!o || o->type != CODI_JSON_OBJ) return NULL;
    for (c = o->child; c; c = c->next)
        if (c->keylen == kl && memcmp(c->key, key, kl) == 0) return c;
    return NULL;
}

/* Number member `key` of `o` into *out; returns 1 if present and numeric. */
CODI_API int codi_json_num(const codi_json *o, const char *key, double *out) {
    const codi_json *v = codi_json_get(o, key);
    if (!v || v->type != CODI_JSON_NUM) return 0;
    *out = v->num; return 1;
}

/* >>files: whole files mapped read-only (or read into memory with CODI_NO_MMAP) ---------- */


/* 1 if path names a regular file (following links). A FIFO, device or directory is not: it is
   refused before open(), which could block on it forever. */
static int codi__is_regular(const char *path) {
#if !defined(_WIN32)
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
#else
    FILE *fp = fopen(path, "rb");
    if (fp) fclose(fp);
    return fp != NULL;
#endif
}

/* 1 if anything exists at path (a file that is not regular is then refused with a message). */
static int codi__exists(const char *path) {
#if !defined(_WIN32)
    struct stat st;
    return stat(path, &st) == 0;
#else
    return codi__is_regular(path);
#endif
}

static codi__file *codi__file_open(const char *path, char *err, size_t errsz) {
    codi__file *f;
#if !defined(_WIN32)
    struct stat st0;
    if (stat(path, &st0) != 0) { codi__err(err, errsz, "cannot open %s", path); return NULL; }
    if (!S_ISREG(st0.st_mode)) { codi__err(err, errsz, "%s is not a regular file", path); return NULL; }
#endif
    if (!(f = (codi__file *)CODI_MALLOC(sizeof *f))) { codi__err(err, errsz, "out of memory"); return NULL; }
    memset(f, 0, sizeof *f);
#if !defined(CODI_NO_MMAP) && !defined(_WIN32)
    {
        struct stat st;
        /* O_NONBLOCK: should the path have become a FIFO since stat(), open() returns at once */
        int fd = open(path, O_RDONLY | O_NONBLOCK);
        if (fd < 0) { codi__err(err, errsz, "cannot open %s", path); CODI_FREE(f); return NULL; }
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || fcntl(fd, F_SETFL, 0) != 0) {
            codi__err(err, errsz, "%s is not a regular file", path); close(fd); CODI_FREE(f); return NULL;
        }
        f->size = (size_t)st.st_size;
        if (f->size > 0) {
            void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) { codi__err(err, errsz, "cannot map %s", path); close(fd); CODI_FREE(f); return NULL; }
            f->data = (const unsigned char *)p; f->mapped = 1; f->fd = fd;
        } else close(fd);
    }
#else
    {
        FILE *fp = fopen(path, "rb");
        long n;
        if (!fp) { codi__err(err, errsz, "cannot open %s", path); CODI_FREE(f); return NULL; }
        if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
            codi__err(err, errsz, "cannot size %s", path); fclose(fp); CODI_FREE(f); return NULL;
        }
        f->size = (size_t)n;
        if (!(f->data = (const unsigned char *)CODI_MALLOC(f->size ? f->size : 1))) {
            codi__err(err, errsz, "out of memory reading %s (%lu bytes)", path, (unsigned long)f->size);
            fclose(fp); CODI_FREE(f); return NULL;
        }
        if (fread((void *)f->data, 1, f->size, fp) != f->size) {
            codi__err(err, errsz, "cannot read %s", path);
            CODI_FREE((void *)f->data); fclose(fp); CODI_FREE(f); return NULL;
        }
        fclose(fp);
    }
#endif
    return f;
}

static void codi__file_close(codi__file *f) {
    if (!f) return;
#if !defined(CODI_NO_MMAP) && !defined(_WIN32)
    if (f->mapped) { munmap((void *)f->data, f->size); close(f->fd); }
#else
    CODI_FREE((void *)f->data);
#endif
    CODI_FREE(f);
}

/* A small text file read into a NUL-terminated buffer; NULL if absent. */
CODI_API char *codi_read_text(const char *path, size_t *len) {
    FILE *fp;
    char *buf = NULL; size_t cap = 0, n = 0;
    if (!codi__is_regular(path) || !(fp = fopen(path, "rb"))) return NULL;
    for (;;) {
        size_t got;
        if (n + 4096 + 1 > cap) {
            char *nb;
            cap = (cap + 4096) * 2;
            nb = (char *)CODI_REALLOC(buf, cap);
            if (!nb) { CODI_FREE(buf); fclose(fp); return NULL; }
            buf = nb;
        }
        got = fread(buf + n, 1, 4096, fp);
        n += got;
        if (got < 4096) break;
    }
    fclose(fp);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* >>tensors: the table of named tensors every loader fills ----------------------------- */



/* Maps the key spellings of CODI (peft), plain HF and prj onto one name:
   "codi.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
   -> "model.layers.0.self_attn.q_proj.weight"; lora_A/B keep ".lora_A"/".lora_B". */
static void codi__canonical_name(const char *key, char *out, size_t outsz) {
    static const char *prefixes[] = { "codi.base_model.model.", "base_model.model.", "codi." };
    const char *k = key;
    char *p;
    size_t i;
    for (i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
        size_t pl = strlen(prefixes[i]);
        if (strncmp(k, prefixes[i], pl) == 0) { k += pl; break; }
    }
    snprintf(out, outsz, "%s", k);
    if ((p = strstr(out, ".base_layer.weight")) != NULL) memmove(p, p + 11, strlen(p + 11) + 1);
    if ((p = strstr(out, ".lora_A.default.weight")) != NULL) strcpy(p, ".lora_A");
    if ((p = strstr(out, ".lora_B.default.weight")) != NULL) strcpy(p, ".lora_B");
}

static int codi__dtype_from_name(const char *s) {
    if (!strcmp(s, "F32")) return CODI_F32;
    if (!strcmp(s, "BF16")) return CODI_BF16;
    if (!strcmp(s, "F16")) return CODI_F16;
    return -1;
}

static codi__tensor *codi__tensors_find(const codi__tensors *ts, const char *name) {
    int i;
    for (i = 0; i < ts->n; i++) if (!strcmp(ts->t[i].name, name)) return &ts->t[i];
    return NULL;
}

/* Adds or replaces (a later source overrides an earlier one, like strict=False loading). */
static int codi__tensors_put(codi__tensors *ts, const char *key, const char *dtype_name, int dtype,
                             int ndim, const int64_t *shape, const void *data, int source) {
    char name[256];
    codi__tensor *t;
    int i;
    codi__canonical_name(key, name, sizeof name);
    t = codi__tensors_find(ts, name);
    if (!t) {
        if (ts->n == ts->cap) {
            int nc = ts->cap ? ts->cap * 2 : 256;
            codi__tensor *nt = (codi__tensor *)CODI_REALLOC(ts->t, (size_t)nc * sizeof *nt);
            if (!nt) return -1;
            ts->t = nt; ts->cap = nc;
        }
        t = &ts->t[ts->n++];
        memset(t, 0, sizeof *t);
        if (!(t->name = codi__strdup(name))) { ts->n--; return -1; }
    }
    t->dtype = dtype;
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dtype_name);
    t->ndim = ndim;
    for (i = 0; i < 4; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->data = data;
    t->source = source;
    return 0;
}

static void codi__tensors_free(codi__tensors *ts) {
    int i;
    codi__file *f = ts->files;
    for (i = 0; i < ts->n; i++) CODI_FREE(ts->t[i].name);
    CODI_FREE(ts->t);
    while (f) { codi__file *nx = f->next; codi__file_close(f); f = nx; }
    memset(ts, 0, sizeof *ts);
}

static int64_t codi__numel(int ndim, const int64_t *shape) {
    int64_t n = 1; int i;
    for (i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* >>safetensors: 8-byte header size, JSON header, raw data: the one reader (the loader's, and
   codi_safetensors_open's for every file we read); the writer is at >>io ------------------------------- */

struct codi_safetensors_file {
    codi__file *file;
    codi_json *header;        /* owns every name and metadata string */
    codi_safetensors_tensor *t;         /* [n] */
    int n;
};

/* Element size of a safetensors dtype name, 0 if unknown (such a tensor is kept, its offsets
   checked against the file only: the loader refuses it only if the model uses it). */
static size_t codi__st_elem_size(const char *dt) {
    static const char *const names[] = { "F64", "I64", "U64", "F32", "I32", "U32", "F16", "BF16", "I16", "U16",
                                         "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2" };
    static const unsigned char size[] = { 8, 8, 8, 4, 4, 4, 2, 2, 2, 2, 1, 1, 1, 1, 1 };
    size_t i;
    for (i = 0; i < sizeof size; i++) if (!strcmp(dt, names[i])) return size[i];
    return 0;
}

CODI_API void codi_safetensors_close(codi_safetensors_file *f) {
    if (!f) return;
    codi_json_free(f->header);
    codi__file_close(f->file);
    CODI_FREE(f->t);
    CODI_FREE(f);
}

CODI_API codi_safetensors_file *codi_safetensors_open(const char *path, char *err, size_t errsz) {
    codi_safetensors_file *f = (codi_safetensors_file *)CODI_MALLOC(sizeof *f);
    const codi_json *e;
    uint64_t hlen = 0;
    size_t data_size;
    char jerr[200];
    int i;
    if (!f) { codi__err(err, errsz, "out of memory"); return NULL; }
    memset(f, 0, sizeof *f);
    if (!(f->file = codi__file_open(path, err, errsz))) { CODI_FREE(f); return NULL; }
    if (f->file->size < 8) { codi__err(err, errsz, "%s: too short for a safetensors file", path); goto fail; }
    for (i = 7; i >= 0; i--) hlen = (hlen << 8) | f->file->data[i];
    if (hlen > f->file->size - 8 || hlen > (100u << 20)) {   /* no content of a foreign file in the message */
        codi__err(err, errsz, "%s: not a safetensors file (its header size does not fit the file's %lu bytes)", path,
                  (unsigned long)f->file->size);
        goto fail;
    }
    data_size = f->file->size - 8 - (size_t)hlen;
    if (!(f->header = codi_json_parse((const char *)f->file->data + 8, (size_t)hlen, jerr, sizeof jerr))) {
        codi__err(err, errsz, "%s: bad header: %s", path, jerr); goto fail;
    }
    if (f->header->type != CODI_JSON_OBJ) { codi__err(err, errsz, "%s: header is not an object", path); goto fail; }
    if (!(f->t = (codi_safetensors_tensor *)CODI_MALLOC(((size_t)f->header->count + 1) * sizeof *f->t))) { codi__err(err, errsz, "out of memory"); goto fail; }
    for (e = f->header->child; e; e = e->next) {
        const codi_json *dt = codi_json_get(e, "dtype"), *shape = codi_json_get(e, "shape"), *offs = codi_json_get(e, "data_offsets"), *v;
        codi_safetensors_tensor *t = &f->t[f->n];
        size_t esz, bytes;
        double b0, b1;
        if (!strcmp(e->key, "__metadata__")) continue;
        if (!dt || dt->type != CODI_JSON_STR || !shape || shape->type != CODI_JSON_ARR || !offs || offs->type != CODI_JSON_ARR ||
            offs->count != 2 || offs->child->type != CODI_JSON_NUM || offs->child->next->type != CODI_JSON_NUM) {
            codi__err(err, errsz, "%s: tensor '%s' lacks dtype/shape/data_offsets", path, e->key); goto fail;
        }
        esz = codi__st_elem_size(dt->str);
        if (strlen(dt->str) >= sizeof t->dtype) {
            codi__err(err, errsz, "%s: tensor '%s' has unknown dtype '%s'", path, e->key, dt->str); goto fail;
        }
        if (shape->count > 8) { codi__err(err, errsz, "%s: tensor '%s' has %d dims (at most 8)", path, e->key, shape->count); goto fail; }
        memset(t, 0, sizeof *t);
        t->name = e->key; strcpy(t->dtype, dt->str);
        t->numel = 1;
        for (v = shape->child; v; v = v->next) {
            if (v->type != CODI_JSON_NUM || v->num < 0 || v->num > 1e15 || v->num != floor(v->num)) {
                codi__err(err, errsz, "%s: tensor '%s' has a bad shape", path, e->key); goto fail;
            }
            t->shape[t->ndim++] = (int64_t)v->num;
            if (v->num > 0 && t->numel > data_size / (size_t)v->num) t->numel = data_size + 1;   /* cannot fit */
            else t->numel *= (size_t)v->num;
        }
        b0 = offs->child->num; b1 = offs->child->next->num;
        bytes = t->numel > data_size ? data_size + 1 : t->numel * esz;
        if (b0 < 0 || b1 < b0 || b1 > (double)data_size || b0 != floor(b0) || b1 != floor(b1) || (esz && (double)bytes != b1 - b0)) {
            codi__err(err, errsz, "%s: tensor '%s' data offsets [%.0f, %.0f) do not match its shape or the file size", path, e->key, b0, b1);
            goto fail;
        }
        t->data = f->file->data + 8 + (size_t)hlen + (size_t)b0;
        f->n++;
    }
    return f;
fail:
    codi_safetensors_close(f);
    return NULL;
}

CODI_API int codi_safetensors_count(const codi_safetensors_file *f) { return f->n; }

CODI_API int codi_safetensors_tensor_at(const codi_safetensors_file *f, int i, codi_safetensors_tensor *out) {
    if (i < 0 || i >= f->n) return -1;
    *out = f->t[i];
    return 0;
}

CODI_API int codi_safetensors_find(const codi_safetensors_file *f, const char *name, codi_safetensors_tensor *out) {
    int i;
    for (i = 0; i < f->n; i++) if (!strcmp(f->t[i].name, name)) { if (out) *out = f->t[i]; return 0; }
    return -1;
}

CODI_API long codi_safetensors_read_f32(const codi_safetensors_file *f, const char *name, float *out, size_t cap, char *err, size_t errsz) {
    codi_safetensors_tensor t;
    const unsigned char *b;
    size_t i;
    if (codi_safetensors_find(f, name, &t)) { codi__err(err, errsz, "no tensor '%s'", name); return -1; }
    if (t.numel > cap || t.numel > (size_t)LONG_MAX) { codi__err(err, errsz, "tensor '%s' has %lu elements; room for %lu", name, (unsigned long)t.numel, (unsigned long)cap); return -1; }
    b = (const unsigned char *)t.data;
    for (i = 0; i < t.numel; i++) {
        if (!strcmp(t.dtype, "F32")) out[i] = codi_elem_f32(b, CODI_F32, i);
        else if (!strcmp(t.dtype, "BF16")) out[i] = codi_elem_f32(b, CODI_BF16, i);
        else if (!strcmp(t.dtype, "F16")) out[i] = codi_elem_f32(b, CODI_F16, i);
        else if (!strcmp(t.dtype, "F64")) { double d; memcpy(&d, b + 8 * i, 8); out[i] = d > FLT_MAX ? HUGE_VALF : d < -FLT_MAX ? -HUGE_VALF : (float)d; }
        else if (!strcmp(t.dtype, "I32")) { int32_t v; memcpy(&v, b + 4 * i, 4); out[i] = (float)v; }
        else if (!strcmp(t.dtype, "I64")) { int64_t v; memcpy(&v, b + 8 * i, 8); out[i] = (float)v; }
        else if (!strcmp(t.dtype, "U8")) out[i] = (float)b[i];
        else { codi__err(err, errsz, "tensor '%s' has dtype %s, which does not convert to float32", name, t.dtype); return -1; }
    }
    return (long)t.numel;
}

CODI_API const char *codi_safetensors_metadata(const codi_safetensors_file *f, const char *key) {
    const codi_json *md = codi_json_get(f->header, "__metadata__"), *v = md ? codi_json_get(md, key) : NULL;
    return v && v->type == CODI_JSON_STR ? v->str : NULL;
}

/* The loader's view of a safetensors file: every tensor of codi_safetensors_open's into the table
   (which keeps the mapping); dtypes the model cannot use are kept as -1 (an error only if used). */
static int codi__read_safetensors(codi__tensors *ts, const char *path, int source, char *err, size_t errsz) {
    codi_safetensors_file *f = codi_safetensors_open(path, err, errsz);
    int i, d, rc = 0;
    if (!f) return -1;
    f->file->next = ts->files; ts->files = f->file; f->file = NULL;
    for (i = 0; i < f->n && rc == 0; i++) {
        const codi_safetensors_tensor *t = &f->t[i];
        int64_t shape[4] = { 1, 1, 1, 1 };
        if (t->ndim > 4) { codi__err(err, errsz, "%s: tensor '%s' has %d dims (max 4)", path, t->name, t->ndim); rc = -1; break; }
        for (d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
        if (codi__tensors_put(ts, t->name, t->dtype, codi__dtype_from_name(t->dtype), t->ndim, shape, t->data, source) != 0) {
            codi__err(err, errsz, "out of memory"); rc = -1;
        }
    }
    codi_safetensors_close(f);
    return rc;
}

#ifndef CODI_NO_TORCH   /* >>zip and >>pickle */

/* >>zip: PyTorch's checkpoint archive (stored entries, zip64 when large) ---------------- */

typedef struct {
    const char *name; size_t name_len;
    const unsigned char *data; uint64_t size;
    uint32_t crc;           /* CRC-32 the central directory records for data[0..size) */
    int crc_checked;        /* 1 once verified */
} codi__zip_entry;

static uint32_t codi__rd16(const unsigned char *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static uint32_t codi__rd32(const unsigned char *p) { return codi__rd16(p) | (codi__rd16(p + 2) << 16); }
static uint64_t codi__rd64(const unsigned char *p) { return codi__rd32(p) | ((uint64_t)codi__rd32(p + 4) << 32); }

/* Lists the archive's entries (pointing into f). Returns the count, or -1. */
static int codi__zip_entries(const codi__file *f, codi__zip_entry **out, char *err, size_t errsz) {
    const unsigned char *d = f->data, *eocd = NULL;
    size_t n = f->size, i, pos;
    uint64_t cd_off, cd_count, cd_size, k;
    codi__zip_entry *es;
    if (n < 22) { codi__err(err, errsz, "not a zip archive (too short)"); return -1; }
    for (i = n - 22 + 1; i-- > 0 && n - i <= 65557;)
        if (codi__rd32(d + i) == 0x06054b50u) { eocd = d + i; break; }
    if (!eocd) { codi__err(err, errsz, "not a zip archive (no end of central directory)"); return -1; }
    cd_count = codi__rd16(eocd + 10); cd_size = codi__rd32(eocd + 12); cd_off = codi__rd32(eocd + 16);
    if (cd_count == 0xFFFF || cd_off == 0xFFFFFFFFu || cd_size == 0xFFFFFFFFu) {
        size_t loc = (size_t)(eocd - d);
        uint64_t z64;
        if (loc < 20 || codi__rd32(d + loc - 20) != 0x07064b50u) { codi__err(err, errsz, "zip64 locator missing"); return -1; }
        z64 = codi__rd64(d + loc - 20 + 8);
        if (n < 56 || z64 > n - 56 || codi__rd32(d + z64) != 0x06064b50u) { codi__err(err, errsz, "zip64 directory record missing"); return -1; }
        cd_count = codi__rd64(d + z64 + 32); cd_size = codi__rd64(d + z64 + 40); cd_off = codi__rd64(d + z64 + 48);
    }
    if (cd_off > n || cd_size > n - cd_off || cd_count > cd_size / 46) {
        codi__err(err, errsz, "zip central directory out of range"); return -1;
    }
    es = (codi__zip_entry *)CODI_MALLOC((size_t)(cd_count ? cd_count : 1) * sizeof *es);
    if (!es) { codi__err(err, errsz, "out of memory"); return -1; }
    pos = (size_t)cd_off;
    for (k = 0; k < cd_count; k++) {
        const unsigned char *c = d + pos, *x;
        uint32_t method, nl, el, cl;
        uint64_t csize, usize, lho;
        size_t xi, lh_nl, lh_el;
        if (pos + 46 > cd_off + cd_size || codi__rd32(c) != 0x02014b50u) { codi__err(err, errsz, "bad zip directory entry %lu", (unsigned long)k); goto fail; }
        method = codi__rd16(c + 10); es[k].crc = codi__rd32(c + 16); es[k].crc_checked = 0;
        csize = codi__rd32(c + 20); usize = codi__rd32(c + 24);
        nl = codi__rd16(c + 28); el = codi__rd16(c + 30); cl = codi__rd16(c + 32); lho = codi__rd32(c + 42);
        if (pos + 46 + nl + el + cl > cd_off + cd_size) { codi__err(err, errsz, "zip directory entry %lu overruns", (unsigned long)k); goto fail; }
        x = c + 46 + nl;
        for (xi = 0; xi + 4 <= el;) {          /* zip64 extra field: 64-bit sizes and offset */
            uint32_t id = codi__rd16(x + xi), sz = codi__rd16(x + xi + 2);
            if (xi + 4 + sz > el) break;
            if (id == 1) {
                size_t q = xi + 4;
                if (usize == 0xFFFFFFFFu && q + 8 <= xi + 4 + sz) { usize = codi__rd64(x + q); q += 8; }
                if (csize == 0xFFFFFFFFu && q + 8 <= xi + 4 + sz) { csize = codi__rd64(x + q); q += 8; }
                if (lho == 0xFFFFFFFFu && q + 8 <= xi + 4 + sz) { lho = codi__rd64(x + q); }
            }
            xi += 4 + sz;
        }
        if (method != 0 || csize != usize) {
            codi__err(err, errsz, "zip entry %.*s is compressed (method %u); torch.save stores entries uncompressed",
                      (int)(nl > 200 ? 200 : nl), (const char *)c + 46, (unsigned)method);
            goto fail;
        }
        if (lho > n - 30 || codi__rd32(d + lho) != 0x04034b50u) { codi__err(err, errsz, "zip local header %lu out of range", (unsigned long)k); goto fail; }
        lh_nl = codi__rd16(d + lho + 26); lh_el = codi__rd16(d + lho + 28);
        if (lho + 30 + lh_nl + lh_el > n || usize > n - (lho + 30 + lh_nl + lh_el)) {
            codi__err(err, errsz, "zip entry %.*s runs past the end of the file (truncated?)", (int)(nl > 200 ? 200 : nl), (const char *)c + 46);
            goto fail;
        }
        es[k].name = (const char *)c + 46; es[k].name_len = nl;
        es[k].data = d + lho + 30 + lh_nl + lh_el; es[k].size = usize;
        pos += 46 + nl + el + cl;
    }
    *out = es;
    return (int)cd_count;
fail:
    CODI_FREE(es);
    return -1;
}

/* CRC-32 (ISO 3309, the zip polynomial 0xEDB88320), eight bytes per step ("slicing by 8"):
   table[k][b] is the CRC of byte b followed by k zero bytes. */

static void codi__crc32_init(codi__crc32_tables *t) {
    uint32_t b, c; int k;
    for (b = 0; b < 256; b++) {
        c = b;
        for (k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        t->table[0][b] = c;
    }
    for (b = 0; b < 256; b++)
        for (k = 1; k < 8; k++) t->table[k][b] = (t->table[k - 1][b] >> 8) ^ t->table[0][t->table[k - 1][b] & 255];
}

static uint32_t codi__crc32(const codi__crc32_tables *t, const unsigned char *p, uint64_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = c ^ codi__rd32(p), hi = codi__rd32(p + 4);
        c = t->table[7][lo & 255] ^ t->table[6][(lo >> 8) & 255] ^ t->table[5][(lo >> 16) & 255] ^ t->table[4][lo >> 24] ^
            t->table[3][hi & 255] ^ t->table[2][(hi >> 8) & 255] ^ t->table[1][(hi >> 16) & 255] ^ t->table[0][hi >> 24];
    }
    while (n--) c = t->table[0][(c ^ *p++) & 255] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Verifies an entry's CRC-32 once (tables NULL: verification is off). 0, or -1 with a message. */
static int codi__zip_verify(codi__zip_entry *e, const codi__crc32_tables *tables, char *err, size_t errsz) {
    uint32_t got;
    if (!tables || e->crc_checked) return 0;
    got = codi__crc32(tables, e->data, e->size);
    if (got != e->crc) {
        codi__err(err, errsz, "zip entry %.*s is corrupted: CRC-32 %08x, the archive records %08x",
                  (int)(e->name_len > 200 ? 200 : e->name_len), e->name, (unsigned)got, (unsigned)e->crc);
        return -1;
    }
    e->crc_checked = 1;
    return 0;
}

/* >>pickle: an allow-list pickle machine for torch.save state dicts ---------------------
   Like torch.load(weights_only=True): the only callables are _rebuild_tensor_v2,
   _rebuild_parameter and OrderedDict; storages come by persistent id. Anything else is an
   error, so reading a checkpoint can never do more than build tensors. */

enum { CODI__PV_NONE, CODI__PV_BOOL, CODI__PV_INT, CODI__PV_FLOAT, CODI__PV_STR, CODI__PV_TUPLE,
       CODI__PV_LIST, CODI__PV_DICT, CODI__PV_GLOBAL, CODI__PV_STORAGE, CODI__PV_TENSOR };
enum { CODI__G_REBUILD_TENSOR, CODI__G_REBUILD_PARAMETER, CODI__G_ORDERED_DICT, CODI__G_STORAGE };

typedef struct codi__pv {
    int type;
    int64_t i;                     /* INT, BOOL */
    const char *s; size_t slen;    /* STR (points into the pickle) */
    struct codi__pv **items;       /* TUPLE/LIST: n items; DICT: n/2 key, value pairs */
    int n, cap;
    int global;                    /* GLOBAL: CODI__G_*; STORAGE global: dtype in `dtype` */
    int dtype;                     /* STORAGE: CODI_* or -1; dtype_name below */
    const char *dtype_name;
    int elem_size;                 /* STORAGE: bytes per element */
    const char *key; size_t keylen;/* STORAGE: archive key "N" */
    int64_t numel;                 /* STORAGE */
    struct codi__pv *storage;      /* TENSOR */
    int64_t offset; int ndim; int64_t shape[4], stride[4];
    struct codi__pv *all_next;     /* every value, for freeing */
} codi__pv;

typedef struct {
    const unsigned char *start, *p, *end;
    codi__pv **stack; int sp, stack_cap;
    int *marks; int nmarks, marks_cap;
    codi__pv **memo; size_t memo_cap;
    codi__pv *all;
    char *err; size_t errsz;
} codi__pickle;

static codi__pv *codi__pv_new(codi__pickle *pk, int type) {
    codi__pv *v = (codi__pv *)CODI_MALLOC(sizeof *v);
    if (!v) { codi__err(pk->err, pk->errsz, "out of memory in pickle"); return NULL; }
    memset(v, 0, sizeof *v);
    v->type = type;
    v->all_next = pk->all; pk->all = v;
    return v;
}

static int codi__pv_append(codi__pv *c, codi__pv *item) {
    if (c->n == c->cap) {
        int nc = c->cap ? c->cap * 2 : 8;
        codi__pv **ni;
        if (nc > (1 << 28)) return -1;                /* beyond any state dict; keeps nc an int */
        ni = (codi__pv **)CODI_REALLOC(c->items, (size_t)nc * sizeof *ni);
        if (!ni) return -1;
        c->items = ni; c->cap = nc;
    }
    c->items[c->n++] = item;
    return 0;
}

static int codi__pk_push(codi__pickle *pk, codi__pv *v) {
    if (!v) { codi__err(pk->err, pk->errsz, "out of memory in pickle"); return -1; }
    if (pk->sp == pk->stack_cap) {
        int nc = pk->stack_cap ? pk->stack_cap * 2 : 64;
        codi__pv **ns;
        if (nc > (1 << 20)) { codi__err(pk->err, pk->errsz, "pickle stack too deep"); return -1; }
        ns = (codi__pv **)CODI_REALLOC(pk->stack, (size_t)nc * sizeof *ns);
        if (!ns) { codi__err(pk->err, pk->errsz, "out of memory in pickle"); return -1; }
        pk->stack = ns; pk->stack_cap = nc;
    }
    pk->stack[pk->sp++] = v;
    return 0;
}

static codi__pv *codi__pk_pop(codi__pickle *pk) {
    int floor_sp = pk->nmarks ? pk->marks[pk->nmarks - 1] : 0;
    if (pk->sp <= floor_sp) { codi__err(pk->err, pk->errsz, "pickle stack underflow"); return NULL; }
    return pk->stack[--pk->sp];
}

/* Pops everything above the last MARK into a new container of `type`. */
static codi__pv *codi__pk_pop_mark(codi__pickle *pk, int type) {
    codi__pv *c;
    int m, i;
    if (!pk->nmarks) { codi__err(pk->err, pk->errsz, "pickle: no MARK"); return NULL; }
    m = pk->marks[--pk->nmarks];
    if (!(c = codi__pv_new(pk, type))) return NULL;
    for (i = m; i < pk->sp; i++)
        if (codi__pv_append(c, pk->stack[i]) != 0) { codi__err(pk->err, pk->errsz, "out of memory in pickle"); return NULL; }
    pk->sp = m;
    return c;
}

static int codi__pk_need(codi__pickle *pk, size_t n) {
    if ((size_t)(pk->end - pk->p) < n) { codi__err(pk->err, pk->errsz, "pickle truncated"); return 0; }
    return 1;
}

static int codi__pk_memo_put(codi__pickle *pk, size_t idx, codi__pv *v) {
    if (!v) { codi__err(pk->err, pk->errsz, "pickle: memoize on an empty stack"); return -1; }
    if (idx >= pk->memo_cap) {
        size_t nc = pk->memo_cap ? pk->memo_cap : 256, j;
        codi__pv **nm;
        if (idx > (1u << 24)) { codi__err(pk->err, pk->errsz, "pickle memo index %lu too large", (unsigned long)idx); return -1; }
        while (nc <= idx) nc *= 2;
        nm = (codi__pv **)CODI_REALLOC(pk->memo, nc * sizeof *nm);
        if (!nm) { codi__err(pk->err, pk->errsz, "out of memory in pickle"); return -1; }
        for (j = pk->memo_cap; j < nc; j++) nm[j] = NULL;
        pk->memo = nm; pk->memo_cap = nc;
    }
    pk->memo[idx] = v;
    return 0;
}

/* Resolves "module.name" against the allow-list. */
static codi__pv *codi__pk_global(codi__pickle *pk, const char *mod, size_t ml, const char *name, size_t nl) {
    static const struct { const char *name; int dtype, elem_size; } storages[] = {
        { "FloatStorage", CODI_F32, 4 }, { "BFloat16Storage", CODI_BF16, 2 }, { "HalfStorage", CODI_F16, 2 },
        { "DoubleStorage", -1, 8 }, { "LongStorage", -1, 8 }, { "IntStorage", -1, 4 }, { "ShortStorage", -1, 2 },
        { "CharStorage", -1, 1 }, { "ByteStorage", -1, 1 }, { "BoolStorage", -1, 1 } };
    codi__pv *g;
    size_t i;
#define CODI__IS(a, al, b) ((al) == strlen(b) && memcmp(a, b, al) == 0)
    g = codi__pv_new(pk, CODI__PV_GLOBAL);
    if (!g) return NULL;
    if (CODI__IS(mod, ml, "torch._utils") && CODI__IS(name, nl, "_rebuild_tensor_v2")) { g->global = CODI__G_REBUILD_TENSOR; return g; }
    if (CODI__IS(mod, ml, "torch._utils") && CODI__IS(name, nl, "_rebuild_parameter")) { g->global = CODI__G_REBUILD_PARAMETER; return g; }
    if (CODI__IS(mod, ml, "collections") && CODI__IS(name, nl, "OrderedDict")) { g->global = CODI__G_ORDERED_DICT; return g; }
    if (CODI__IS(mod, ml, "torch"))
        for (i = 0; i < sizeof storages / sizeof *storages; i++)
            if (CODI__IS(name, nl, storages[i].name)) {
                g->global = CODI__G_STORAGE; g->dtype = storages[i].dtype; g->dtype_name = storages[i].name;
                g->elem_size = storages[i].elem_size;
                return g;
            }
#undef CODI__IS
    codi__err(pk->err, pk->errsz, "checkpoint pickle references '%.*s.%.*s', which is not allowed (only tensors and OrderedDict are)",
              (int)(ml > 80 ? 80 : ml), mod, (int)(nl > 80 ? 80 : nl), name);
    return NULL;
}

static int codi__pv_int(const codi__pv *v, int64_t *out) {
    if (!v || (v->type != CODI__PV_INT && v->type != CODI__PV_BOOL)) return 0;
    *out = v->i; return 1;
}

/* callable(args) for the allow-listed callables. */
static codi__pv *codi__pk_call(codi__pickle *pk, codi__pv *fn, codi__pv *args) {
    codi__pv *t;
    int i;
    if (fn->type != CODI__PV_GLOBAL || args->type != CODI__PV_TUPLE) { codi__err(pk->err, pk->errsz, "pickle: REDUCE on a non-callable"); return NULL; }
    switch (fn->global) {
    case CODI__G_ORDERED_DICT:
        return codi__pv_new(pk, CODI__PV_DICT);
    case CODI__G_REBUILD_PARAMETER:
        if (args->n < 1 || args->items[0]->type != CODI__PV_TENSOR) { codi__err(pk->err, pk->errsz, "pickle: bad _rebuild_parameter"); return NULL; }
        return args->items[0];
    case CODI__G_REBUILD_TENSOR: {
        codi__pv *st, *size, *stride;
        if (args->n < 4) { codi__err(pk->err, pk->errsz, "pickle: _rebuild_tensor_v2 takes 6 or 7 arguments"); return NULL; }
        st = args->items[0]; size = args->items[2]; stride = args->items[3];
        if (st->type != CODI__PV_STORAGE || size->type != CODI__PV_TUPLE || stride->type != CODI__PV_TUPLE ||
            size->n != stride->n || size->n > 4) {
            codi__err(pk->err, pk->errsz, "pickle: bad _rebuild_tensor_v2 arguments"); return NULL;
        }
        t = codi__pv_new(pk, CODI__PV_TENSOR);
        if (!t) return NULL;
        t->storage = st; t->ndim = size->n;
        if (!codi__pv_int(args->items[1], &t->offset) || t->offset < 0) { codi__err(pk->err, pk->errsz, "pickle: bad storage offset"); return NULL; }
        for (i = 0; i < size->n; i++)
            if (!codi__pv_int(size->items[i], &t->shape[i]) || !codi__pv_int(stride->items[i], &t->stride[i]) ||
                t->shape[i] < 0 || t->shape[i] > ((int64_t)1 << 40) || t->stride[i] < 0) {
                codi__err(pk->err, pk->errsz, "pickle: bad tensor size or stride"); return NULL;
            }
        return t;
    }
    default:
        codi__err(pk->err, pk->errsz, "pickle: a storage type is not callable"); return NULL;
    }
}

/* Runs the pickle; on success *result is the top-level value. */
static int codi__pk_run(codi__pickle *pk, codi__pv **result) {
    for (;;) {
        int op;
        codi__pv *v, *a, *b;
        if (!codi__pk_need(pk, 1)) return -1;
        op = *pk->p++;
        switch (op) {
        case 0x80: if (!codi__pk_need(pk, 1)) return -1; pk->p += 1; break;              /* PROTO */
        case 0x95: if (!codi__pk_need(pk, 8)) return -1; pk->p += 8; break;              /* FRAME */
        case '.':                                                                         /* STOP */
            if (pk->sp != 1 || pk->nmarks) { codi__err(pk->err, pk->errsz, "pickle: STOP with %d values left", pk->sp); return -1; }
            *result = pk->stack[0];
            return 0;
        case '(':                                                                         /* MARK */
            if (pk->nmarks == pk->marks_cap) {
                int nc = pk->marks_cap ? pk->marks_cap * 2 : 32;
                int *nm;
                if (nc > (1 << 20)) { codi__err(pk->err, pk->errsz, "pickle: too many marks"); return -1; }
                nm = (int *)CODI_REALLOC(pk->marks, (size_t)nc * sizeof *nm);
                if (!nm) { codi__err(pk->err, pk->errsz, "out of memory in pickle"); return -1; }
                pk->marks = nm; pk->marks_cap = nc;
            }
            pk->marks[pk->nmarks++] = pk->sp;
            break;
        case '}': if (codi__pk_push(pk, codi__pv_new(pk, CODI__PV_DICT))) return -1; break;
        case ']': if (codi__pk_push(pk, codi__pv_new(pk, CODI__PV_LIST))) return -1; break;
        case ')': if (codi__pk_push(pk, codi__pv_new(pk, CODI__PV_TUPLE))) return -1; break;
        case 't': if (!(v = codi__pk_pop_mark(pk, CODI__PV_TUPLE)) || codi__pk_push(pk, v)) return -1; break;
        case 'l': if (!(v = codi__pk_pop_mark(pk, CODI__PV_LIST)) || codi__pk_push(pk, v)) return -1; break;
        case 'd':
            if (!(v = codi__pk_pop_mark(pk, CODI__PV_DICT)) || (v->n & 1)) { if (v) codi__err(pk->err, pk->errsz, "pickle: odd DICT"); return -1; }
            if (codi__pk_push(pk, v)) return -1;
            break;
        case 0x85: case 0x86: case 0x87: {                                               /* TUPLE1..3 */
            int k = op - 0x84, i;
            if (pk->sp - (pk->nmarks ? pk->marks[pk->nmarks - 1] : 0) < k) { codi__err(pk->err, pk->errsz, "pickle stack underflow"); return -1; }
            if (!(v = codi__pv_new(pk, CODI__PV_TUPLE))) return -1;
            for (i = pk->sp - k; i < pk->sp; i++) if (codi__pv_append(v, pk->stack[i])) { codi__err(pk->err, pk->errsz, "out of memory"); return -1; }
            pk->sp -= k;
            if (codi__pk_push(pk, v)) return -1;
            break;
        }
        case 'a': case 'e': case 's': case 'u': {                                        /* APPEND(S), SETITEM(S) */
            codi__pv *items, *target; int i;
            if (op == 'a' || op == 's') {
                if (!(items = codi__pv_new(pk, CODI__PV_TUPLE))) return -1;
                if (op == 's') { if (!(b = codi__pk_pop(pk)) || !(a = codi__pk_pop(pk))) return -1;
                                 if (codi__pv_append(items, a) || codi__pv_append(items, b)) { codi__err(pk->err, pk->errsz, "out of memory"); return -1; } }
                else if (!(a = codi__pk_pop(pk))) return -1;
                else if (codi__pv_append(items, a)) { codi__err(pk->err, pk->errsz, "out of memory"); return -1; }
            } else if (!(items = codi__pk_pop_mark(pk, CODI__PV_TUPLE))) return -1;
            if (pk->sp < 1) { codi__err(pk->err, pk->errsz, "pickle stack underflow"); return -1; }
            target = pk->stack[pk->sp - 1];
            if ((op == 's' || op == 'u') ? (target->type != CODI__PV_DICT || (items->n & 1)) : target->type != CODI__PV_LIST) {
                codi__err(pk->err, pk->errsz, "pickle: %s on the wrong type", op == 's' || op == 'u' ? "SETITEMS" : "APPENDS"); return -1;
            }
            for (i = 0; i < items->n; i++) if (codi__pv_append(target, items->items[i])) { codi__err(pk->err, pk->errsz, "out of memory"); return -1; }
            break;
        }
        case 'q': case 'r': case 0x94: {                                                 /* BINPUT, LONG_BINPUT, MEMOIZE */
            size_t idx;
            if (op == 'q') { if (!codi__pk_need(pk, 1)) return -1; idx = *pk->p++; }
            else if (op == 'r') { if (!codi__pk_need(pk, 4)) return -1; idx = codi__rd32(pk->p); pk->p += 4; }
            else { idx = 0; while (idx < pk->memo_cap && pk->memo[idx]) idx++; }
            if (codi__pk_memo_put(pk, idx, pk->sp ? pk->stack[pk->sp - 1] : NULL)) return -1;
            break;
        }
        case 'h': case 'j': {                                                            /* BINGET, LONG_BINGET */
            size_t idx;
            if (op == 'h') { if (!codi__pk_need(pk, 1)) return -1; idx = *pk->p++; }
            else { if (!codi__pk_need(pk, 4)) return -1; idx = codi__rd32(pk->p); pk->p += 4; }
            if (idx >= pk->memo_cap || !pk->memo[idx]) { codi__err(pk->err, pk->errsz, "pickle: memo %lu is empty", (unsigned long)idx); return -1; }
            if (codi__pk_push(pk, pk->memo[idx])) return -1;
            break;
        }
        case 'c': {                                                                      /* GLOBAL "mod\nname\n" */
            const unsigned char *m = pk->p, *nl1, *nl2;
            nl1 = (const unsigned char *)memchr(m, '\n', (size_t)(pk->end - m));
            nl2 = nl1 ? (const unsigned char *)memchr(nl1 + 1, '\n', (size_t)(pk->end - nl1 - 1)) : NULL;
            if (!nl2) { codi__err(pk->err, pk->errsz, "pickle truncated in GLOBAL"); return -1; }
            v = codi__pk_global(pk, (const char *)m, (size_t)(nl1 - m), (const char *)nl1 + 1, (size_t)(nl2 - nl1 - 1));
            if (!v) return -1;
            pk->p = nl2 + 1;
            if (codi__pk_push(pk, v)) return -1;
            break;
        }
        case 0x93:                                                                       /* STACK_GLOBAL */
            if (!(b = codi__pk_pop(pk)) || !(a = codi__pk_pop(pk))) return -1;
            if (a->type != CODI__PV_STR || b->type != CODI__PV_STR) { codi__err(pk->err, pk->errsz, "pickle: STACK_GLOBAL needs strings"); return -1; }
            if (!(v = codi__pk_global(pk, a->s, a->slen, b->s, b->slen)) || codi__pk_push(pk, v)) return -1;
            break;
        case 'R':                                                                        /* REDUCE */
            if (!(b = codi__pk_pop(pk)) || !(a = codi__pk_pop(pk))) return -1;
            if (!(v = codi__pk_call(pk, a, b)) || codi__pk_push(pk, v)) return -1;
            break;
        case 'b':                                                                        /* BUILD: state ignored on dicts */
            if (!(b = codi__pk_pop(pk))) return -1;
            if (pk->sp < 1 || (pk->stack[pk->sp - 1]->type != CODI__PV_DICT && pk->stack[pk->sp - 1]->type != CODI__PV_TENSOR)) {
                codi__err(pk->err, pk->errsz, "pickle: BUILD on an unsupported object"); return -1;
            }
            break;
        case 'Q': {                                                                      /* BINPERSID: ('storage', type, key, location, numel) */
            codi__pv *t = codi__pk_pop(pk);
            if (!t) return -1;
            if (t->type != CODI__PV_TUPLE || t->n < 5 || t->items[0]->type != CODI__PV_STR ||
                t->items[0]->slen != 7 || memcmp(t->items[0]->s, "storage", 7) != 0 ||
                t->items[1]->type != CODI__PV_GLOBAL || t->items[1]->global != CODI__G_STORAGE ||
                t->items[2]->type != CODI__PV_STR || t->items[4]->type != CODI__PV_INT || t->items[4]->i < 0) {
                codi__err(pk->err, pk->errsz, "pickle: unsupported persistent id"); return -1;
            }
            if (!(v = codi__pv_new(pk, CODI__PV_STORAGE))) return -1;
            v->dtype = t->items[1]->dtype; v->dtype_name = t->items[1]->dtype_name; v->elem_size = t->items[1]->elem_size;
            v->key = t->items[2]->s; v->keylen = t->items[2]->slen; v->numel = t->items[4]->i;
            if (codi__pk_push(pk, v)) return -1;
            break;
        }
        case 'J': case 'K': case 'M': case 0x8a: {                                       /* ints */
            int64_t x = 0;
            if (!(v = codi__pv_new(pk, CODI__PV_INT))) return -1;
            if (op == 'K') { if (!codi__pk_need(pk, 1)) return -1; x = *pk->p; pk->p += 1; }
            else if (op == 'M') { if (!codi__pk_need(pk, 2)) return -1; x = codi__rd16(pk->p); pk->p += 2; }
            else if (op == 'J') { if (!codi__pk_need(pk, 4)) return -1; x = (int32_t)codi__rd32(pk->p); pk->p += 4; }
            else {
                int nb, i;
                if (!codi__pk_need(pk, 1)) return -1;
                nb = *pk->p++;
                if (nb > 8 || !codi__pk_need(pk, (size_t)nb)) { codi__err(pk->err, pk->errsz, "pickle: LONG1 of %d bytes", nb); return -1; }
                for (i = nb - 1; i >= 0; i--) x = (int64_t)((uint64_t)x << 8 | pk->p[i]);
                if (nb > 0 && nb < 8 && (pk->p[nb - 1] & 0x80)) x -= (int64_t)1 << (8 * nb);
                pk->p += nb;
            }
            v->i = x;
            if (codi__pk_push(pk, v)) return -1;
            break;
        }
        case 'N': if (codi__pk_push(pk, codi__pv_new(pk, CODI__PV_NONE))) return -1; break;
        case 0x88: case 0x89:
            if (!(v = codi__pv_new(pk, CODI__PV_BOOL))) return -1;
            v->i = op == 0x88;
            if (codi__pk_push(pk, v)) return -1;
            break;
        case 'G':                                                                        /* BINFLOAT */
            if (!codi__pk_need(pk, 8)) return -1;
            pk->p += 8;
            if (codi__pk_push(pk, codi__pv_new(pk, CODI__PV_FLOAT))) return -1;
            break;
        case 'X': case 0x8c: case 0x8d: case 'U': case 'T': case 'C': case 'B': {        /* strings, bytes */
            uint64_t len;
            size_t w = (op == 0x8c || op == 'U' || op == 'C') ? 1 : op == 0x8d ? 8 : 4;
            if (!codi__pk_need(pk, w)) return -1;
            len = w == 1 ? *pk->p : w == 4 ? codi__rd32(pk->p) : codi__rd64(pk->p);
            pk->p += w;
            if (len > (uint64_t)(pk->end - pk->p)) { codi__err(pk->err, pk->errsz, "pickle truncated in a string"); return -1; }
            if (!(v = codi__pv_new(pk, CODI__PV_STR))) return -1;
            v->s = (const char *)pk->p; v->slen = (size_t)len;
            pk->p += len;
            if (codi__pk_push(pk, v)) return -1;
            break;
        }
        case '0': if (!codi__pk_pop(pk)) return -1; break;                                /* POP */
        case '1':                                                                         /* POP_MARK */
            if (!pk->nmarks) { codi__err(pk->err, pk->errsz, "pickle: no MARK"); return -1; }
            pk->sp = pk->marks[--pk->nmarks];
            break;
        case '2':                                                                         /* DUP */
            if (pk->sp < 1) { codi__err(pk->err, pk->errsz, "pickle stack underflow"); return -1; }
            if (codi__pk_push(pk, pk->stack[pk->sp - 1])) return -1;
            break;
        default:
            codi__err(pk->err, pk->errsz, "pickle opcode 0x%02x at byte %ld is not supported", op, (long)(pk->p - 1 - pk->start));
            return -1;
        }
    }
}

static void codi__pk_free(codi__pickle *pk) {
    codi__pv *v = pk->all;
    while (v) { codi__pv *nx = v->all_next; CODI_FREE(v->items); CODI_FREE(v); v = nx; }
    CODI_FREE(pk->stack); CODI_FREE(pk->marks); CODI_FREE(pk->memo);
}

/* Where tensor t starts in its storage entry se, checked against both: the storage's numel *
   element size must fit the entry, offset + span the storage (span: the last element's index + 1
   for its shape and strides). 0 with *byte_offset set, or -1 with a message. */
static int codi__pk_tensor_range(const codi__pv *t, const codi__zip_entry *se, uint64_t *byte_offset,
                                 char *err, size_t errsz) {
    const codi__pv *st = t->storage;
    uint64_t storage_bytes, span = 1, end, step;
    int64_t numel, expect = 1;
    int d;
    if (!codi__numel_checked(t->ndim, t->shape, &numel)) { codi__err(err, errsz, "its shape has too many elements"); return -1; }
    for (d = t->ndim - 1; d >= 0 && numel > 0; d--) {   /* contiguous row-major strides (an empty tensor reads nothing) */
        if (t->shape[d] != 1 && t->stride[d] != expect) {
            codi__err(err, errsz, "it is not contiguous (strides); save it with .contiguous()"); return -1;
        }
        expect *= t->shape[d];                    /* <= numel (every dim >= 1 here): no overflow */
        if (t->shape[d] > 0) {
            if (!codi__mul_u64((uint64_t)(t->shape[d] - 1), (uint64_t)t->stride[d], &step) || !codi__add_u64(span, step, &span)) {
                codi__err(err, errsz, "its strides overflow"); return -1;
            }
        }
    }
    if (numel == 0) span = 0;
    if (!codi__mul_u64((uint64_t)st->numel, (uint64_t)st->elem_size, &storage_bytes) || storage_bytes > se->size ||
        !codi__add_u64((uint64_t)t->offset, span, &end) || end > (uint64_t)st->numel) {
        codi__err(err, errsz, "it does not fit its storage (%lld elements at offset %lld; the storage holds %lld, its entry %llu bytes)",
                  (long long)numel, (long long)t->offset, (long long)st->numel, (unsigned long long)se->size);
        return -1;
    }
    *byte_offset = (uint64_t)t->offset * (uint64_t)st->elem_size;   /* <= storage_bytes */
    return 0;
}

/* The tensors of a torch.save zip archive (torch 1.6+ and 2.x) already in memory (f), into the
   table; path names it in messages. verify_crc: check the CRC-32 of every entry read. */
static int codi__torch_zip_tensors(codi__tensors *ts, const codi__file *f, const char *path, int source, int verify_crc,
                                   char *err, size_t errsz) {
    codi__zip_entry *es = NULL, *pkl = NULL;
    codi__crc32_tables *crc = NULL;
    codi__pickle pk;
    codi__pv *root = NULL;
    char msg[200] = "";
    int ne, i, rc = -1;
    size_t prefix_len = 0;
    memset(&pk, 0, sizeof pk);
    ne = codi__zip_entries(f, &es, msg, sizeof msg);
    if (ne < 0) { codi__err(err, errsz, "%s: %s", path, msg); return -1; }
    if (verify_crc) {
        if (!(crc = (codi__crc32_tables *)CODI_MALLOC(sizeof *crc))) { codi__err(err, errsz, "out of memory"); goto done; }
        codi__crc32_init(crc);
    }
    for (i = 0; i < ne; i++) {
        const char *slash = (const char *)memchr(es[i].name, '/', es[i].name_len);
        if (slash && es[i].name_len - (size_t)(slash - es[i].name) == 9 && !memcmp(slash, "/data.pkl", 9)) {
            pkl = &es[i]; prefix_len = (size_t)(slash - es[i].name) + 1; break;
        }
    }
    if (!pkl) { codi__err(err, errsz, "%s: no data.pkl in the archive: not a torch.save checkpoint", path); goto done; }
    for (i = 0; i < ne; i++)
        if (es[i].name_len == prefix_len + 9 && !memcmp(es[i].name + prefix_len, "byteorder", 9)) {
            if (codi__zip_verify(&es[i], crc, msg, sizeof msg)) { codi__err(err, errsz, "%s: %s", path, msg); goto done; }
            if (!(es[i].size == 6 && !memcmp(es[i].data, "little", 6))) {
                codi__err(err, errsz, "%s: big-endian checkpoints are not supported", path); goto done;
            }
        }
    if (codi__zip_verify(pkl, crc, msg, sizeof msg)) { codi__err(err, errsz, "%s: %s", path, msg); goto done; }
    pk.start = pk.p = pkl->data; pk.end = pkl->data + pkl->size; pk.err = msg; pk.errsz = sizeof msg;
    if (codi__pk_run(&pk, &root) != 0) { codi__err(err, errsz, "%s: %s", path, msg); goto done; }
    if (root->type != CODI__PV_DICT) { codi__err(err, errsz, "%s: the pickle is not a state dict", path); goto done; }
    for (i = 0; i + 1 < root->n; i += 2) {
        codi__pv *k = root->items[i], *t = root->items[i + 1], *st;
        char key[256], sname[300];
        codi__zip_entry *se = NULL;
        uint64_t at;
        int j;
        if (k->type != CODI__PV_STR || t->type != CODI__PV_TENSOR) continue;
        snprintf(key, sizeof key, "%.*s", (int)(k->slen > 255 ? 255 : k->slen), k->s);
        st = t->storage;
        snprintf(sname, sizeof sname, "%.*sdata/%.*s", (int)prefix_len, pkl->name, (int)(st->keylen > 64 ? 64 : st->keylen), st->key);
        for (j = 0; j < ne; j++)
            if (es[j].name_len == strlen(sname) && !memcmp(es[j].name, sname, es[j].name_len)) { se = &es[j]; break; }
        if (!se) { codi__err(err, errsz, "%s: tensor '%s': storage %s missing from the archive", path, key, sname); goto done; }
        if (codi__pk_tensor_range(t, se, &at, msg, sizeof msg) || codi__zip_verify(se, crc, msg, sizeof msg)) {
            codi__err(err, errsz, "%s: tensor '%s': %s", path, key, msg); goto done;
        }
        if (codi__tensors_put(ts, key, st->dtype_name, st->dtype, t->ndim, t->shape,
                              st->dtype >= 0 ? se->data + (size_t)at : NULL, source) != 0) {
            codi__err(err, errsz, "out of memory"); goto done;
        }
    }
    rc = 0;
done:
    codi__pk_free(&pk);
    CODI_FREE(crc);
    CODI_FREE(es);
    return rc;
}

static int codi__read_torch_zip(codi__tensors *ts, const char *path, int source, int verify_crc, char *err, size_t errsz) {
    codi__file *f = codi__file_open(path, err, errsz);
    if (!f) return -1;
    f->next = ts->files; ts->files = f;
    return codi__torch_zip_tensors(ts, f, path, source, verify_crc, err, errsz);
}

#else
static int codi__read_torch_zip(codi__tensors *ts, const char *path, int source, int verify_crc, char *err, size_t errsz) {
    (void)ts; (void)source; (void)verify_crc;
    codi__err(err, errsz, "%s: a PyTorch checkpoint, but this library was built with CODI_NO_TORCH (safetensors only)", path);
    return -1;
}
#endif /* CODI_NO_TORCH */

/* >>loading: tensors -> config -> weights (LoRA merged) -------------------------------- */

typedef struct {
    codi__tensors ts;
    void **bufs; int nbufs, capbufs;   /* buffers the model owns */
} codi__model_internal;

typedef struct {
    codi_model *m;
    codi__model_internal *in;
    char *err; size_t errsz;
    codi__pool *pool;       /* merge threads (NULL: one) */
    int n_threads;
} codi__loader;

/* A model buffer, 64-byte aligned (the GEMV's 64-byte loads then stay within cache lines). */
static void *codi__model_alloc(codi__loader *ld, size_t bytes) {
    void *p;
    if (ld->in->nbufs == ld->in->capbufs) {
        int nc = ld->in->capbufs ? ld->in->capbufs * 2 : 64;
        void **nb = (void **)CODI_REALLOC(ld->in->bufs, (size_t)nc * sizeof *nb);
        if (!nb) { codi__err(ld->err, ld->errsz, "out of memory"); return NULL; }
        ld->in->bufs = nb; ld->in->capbufs = nc;
    }
    p = bytes < (size_t)-1 - 64 ? CODI_MALLOC(bytes + 64) : NULL;
    if (p) ld->in->bufs[ld->in->nbufs++] = p;
    else { codi__err(ld->err, ld->errsz, "out of memory (%lu bytes)", (unsigned long)bytes); return NULL; }
    return (void *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
}

/* Finds a tensor of a usable dtype and the given 1-D or 2-D shape. */
static const codi__tensor *codi__need(codi__loader *ld, const char *name, int64_t rows, int64_t cols) {
    const codi__tensor *t = codi__tensors_find(&ld->in->ts, name);
    if (!t) { codi__err(ld->err, ld->errsz, "missing tensor %s", name); return NULL; }
    if (t->dtype < 0) {
        codi__err(ld->err, ld->errsz, "tensor %s has dtype %s; supported are F32, BF16, F16", name, t->dtype_name); return NULL;
    }
    if ((cols == 0 && (t->ndim != 1 || t->shape[0] != rows)) ||
        (cols != 0 && (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols))) {
        codi__err(ld->err, ld->errsz, "tensor %s has shape [%lld%s%lld], expected [%lld%s%lld]", name,
                  (long long)t->shape[0], t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL,
                  (long long)rows, cols ? ", " : "", cols ? (long long)cols : 0LL);
        return NULL;
    }
    return t;
}

static float *codi__load_vector(codi__loader *ld, const char *name, int n) {
    const codi__tensor *t = codi__need(ld, name, n, 0);
    float *v;
    int i;
    if (!t || !(v = (float *)codi__model_alloc(ld, (size_t)n * sizeof(float)))) return NULL;
    for (i = 0; i < n; i++) v[i] = codi_elem_f32(t->data, t->dtype, (size_t)i);
    return v;
}

typedef struct {
    const codi__tensor *w;      /* base [rows, cols] */
    const float *bs;            /* scale * lora_B [rows, r], or NULL without LoRA */
    codi_matrix at;             /* lora_A transposed [cols, r] (f32) */
    int i0, ni, cols, dtype, unit;
    float *ba;                  /* [MC, cols] (scale B @ A) of rows i0 .. i0 + ni */
    unsigned char *dst;         /* [rows, cols] of dtype */
    float *work; size_t work_stride;   /* [threads, codi__work_floats(MC, r)] */
} codi__merge_ctx;

/* Rows [i0, i0 + ni), columns of work items [u0, u1): W + scale * B @ A (the product by the
   GEMM, B's rows as its positions), converted to the storage dtype. */
static void codi__merge_task(void *ctx, int tid, int u0, int u1) {
    codi__merge_ctx *c = (codi__merge_ctx *)ctx;
    int j0 = u0 * c->unit, j1 = u1 * c->unit < c->cols ? u1 * c->unit : c->cols, i, j;
    if (c->bs) codi__matmul_range(codi__kernel_active(), c->ba, (size_t)c->cols, c->bs + (size_t)c->i0 * c->at.cols, &c->at,
                                  c->ni, j0, j1, c->work + (size_t)tid * c->work_stride);
    for (i = 0; i < c->ni; i++) {
        size_t row = (size_t)(c->i0 + i) * c->cols;
        const float *bai = c->ba + (size_t)i * c->cols;
        for (j = j0; j < j1; j++) {
            float v = codi_elem_f32(c->w->data, c->w->dtype, row + j) + (c->bs ? bai[j] : 0.0f);
            if (c->dtype == CODI_F32) memcpy(c->dst + (row + j) * 4, &v, 4);
            else { uint16_t h = codi__f32_to_bf16(v); memcpy(c->dst + (row + j) * 2, &h, 2); }
        }
    }
}

/* Gives back the resident pages of a tensor that was copied out (its interior pages, when no
   other tensor overlaps them), so the file does not stay resident beside the merged copy: the
   range is mapped afresh from the file (MAP_FIXED), which keeps the addresses reserved. */
static void codi__release_tensor(codi__loader *ld, const codi__tensor *t) {
#if !defined(CODI_NO_MMAP) && !defined(_WIN32)
    size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = (size_t)codi__numel(t->ndim, t->shape) * codi__dtype_size(t->dtype);
    uintptr_t lo = ((uintptr_t)t->data + page - 1) / page * page, hi = ((uintptr_t)t->data + bytes) / page * page;
    const codi__file *f;
    int i;
    if (hi <= lo) return;
    for (i = 0; i < ld->in->ts.n; i++) {
        const codi__tensor *o = &ld->in->ts.t[i];
        uintptr_t olo = (uintptr_t)o->data, ohi = olo + (size_t)codi__numel(o->ndim, o->shape) * (o->dtype >= 0 ? codi__dtype_size(o->dtype) : 8);
        if (o != t && o->data && olo < hi && ohi > lo) return;
    }
    for (f = ld->in->ts.files; f; f = f->next)
        if (f->mapped && lo >= (uintptr_t)f->data && hi <= (uintptr_t)f->data + f->size) {
            mmap((void *)lo, hi - lo, PROT_READ, MAP_PRIVATE | MAP_FIXED, f->fd, (off_t)(lo - (uintptr_t)f->data));
            return;
        }
#else
    (void)ld; (void)t;
#endif
}

/* Weight `prefix`.weight [rows, cols] plus scale * lora_B @ lora_A when present, stored as
   f32 (exact) or bf16; an unchanged tensor of the right type is used in place. */
static int codi__load_matrix(codi__loader *ld, codi_matrix *out, const char *prefix, int rows, int cols, int dtype) {
    char name[200], an[200], bn[200];
    const codi__tensor *w, *a = NULL, *b = NULL;
    codi__merge_ctx mc;
    float *abuf = NULL, *bbuf = NULL;   /* lora_A transposed [cols, r], scale * lora_B [rows, r] */
    size_t esz = codi__dtype_size(dtype);
    int r = 0, k, j;
    snprintf(name, sizeof name, "%s.weight", prefix);
    snprintf(an, sizeof an, "%s.lora_A", prefix);
    snprintf(bn, sizeof bn, "%s.lora_B", prefix);
    if (!(w = codi__need(ld, name, rows, cols))) return -1;
    if (codi__tensors_find(&ld->in->ts, an) || codi__tensors_find(&ld->in->ts, bn)) {
        const codi__tensor *ta = codi__tensors_find(&ld->in->ts, an);
        if (!ta || ta->ndim != 2) { codi__err(ld->err, ld->errsz, "%s: lora_A missing or not 2-D", prefix); return -1; }
        r = (int)ta->shape[0];
        if (!(a = codi__need(ld, an, r, cols)) || !(b = codi__need(ld, bn, rows, r))) return -1;
    }
    out->rows = rows; out->cols = cols; out->dtype = dtype;
    if (!a && w->dtype == dtype && ((uintptr_t)w->data % esz) == 0) { out->data = w->data; return 0; }
    memset(&mc, 0, sizeof mc);
    mc.w = w; mc.cols = cols; mc.dtype = dtype;
    mc.unit = codi__kernel_active()->micro ? codi__kernel_active()->nr : 4;
    if (!(mc.dst = (unsigned char *)codi__model_alloc(ld, (size_t)rows * cols * esz))) return -1;
    mc.ba = (float *)CODI_MALLOC((size_t)CODI__MC * cols * sizeof(float));
    mc.work_stride = codi__work_floats(CODI__MC, r);
    mc.work = (float *)CODI_MALLOC((size_t)ld->n_threads * mc.work_stride * sizeof(float));
    if (a) { abuf = (float *)CODI_MALLOC((size_t)r * cols * sizeof(float)); bbuf = (float *)CODI_MALLOC((size_t)rows * r * sizeof(float)); }
    if (!mc.ba || !mc.work || (a && (!abuf || !bbuf))) {
        CODI_FREE(mc.ba); CODI_FREE(mc.work); CODI_FREE(abuf); CODI_FREE(bbuf); codi__err(ld->err, ld->errsz, "out of memory"); return -1;
    }
    if (a) {
        for (k = 0; k < r; k++)
            for (j = 0; j < cols; j++) abuf[(size_t)j * r + k] = codi_elem_f32(a->data, a->dtype, (size_t)k * cols + j);
        for (k = 0; k < rows * r; k++) bbuf[k] = ld->m->config.lora_scale * codi_elem_f32(b->data, b->dtype, (size_t)k);
        mc.bs = bbuf; mc.at.dtype = CODI_F32; mc.at.rows = cols; mc.at.cols = r; mc.at.data = abuf;
    }
    for (mc.i0 = 0; mc.i0 < rows; mc.i0 += CODI__MC) {
        mc.ni = rows - mc.i0 < CODI__MC ? rows - mc.i0 : CODI__MC;
        CODI__PARALLEL(ld->pool, codi__merge_task, &mc, (cols + mc.unit - 1) / mc.unit);
    }
    CODI_FREE(mc.ba); CODI_FREE(mc.work); CODI_FREE(abuf); CODI_FREE(bbuf);
    out->data = mc.dst;
    codi__release_tensor(ld, w);
    if (a) { codi__release_tensor(ld, a); codi__release_tensor(ld, b); }
    return 0;
}

/* Where the config came from, for messages: the config.json read (or none) and which token
   ids it gave (the others are Llama 3 defaults). */
typedef struct { char path[4200]; int found, has_bos, has_eos; } codi__config_src;

/* Integer member key of o into *out when present: a whole number in [lo, hi], else -1 with a
   message naming the field and the file. */
static int codi__config_int(const codi_json *o, const char *key, int lo, int hi, int *out, const char *path,
                            char *err, size_t errsz) {
    double x;
    if (!codi_json_num(o, key, &x)) return 0;
    if (!codi__double_to_int(x, lo, hi, out)) {
        codi__err(err, errsz, "%s: %s %g is not a whole number in [%d, %d]", path, key, x, lo, hi); return -1;
    }
    return 0;
}

/* Float member key of o into *out when present: finite and > 0 (every float setting of a
   Llama config is a positive scale, eps or frequency), else -1 with a message. */
static int codi__config_pos_float(const codi_json *o, const char *key, float *out, const char *path, char *err, size_t errsz) {
    double x;
    if (!codi_json_num(o, key, &x)) return 0;
    if (!(x > 0 && x <= FLT_MAX)) { codi__err(err, errsz, "%s: %s %g must be finite and > 0", path, key, x); return -1; }
    *out = (float)x;
    return 0;
}

#define CODI__MAX_DIM (1 << 20)     /* a model size beyond this is a typo or an attack */
#define CODI__MAX_VOCAB (1 << 24)

/* Reads the shape, rope and token settings of an HF config.json (text, named `path` in errors)
   into c. 1, or -1 with a message (bad JSON or a value out of range). */
static int codi__apply_config_text(codi_config *c, codi__config_src *src, const char *text, size_t len, const char *path,
                                   int *tie, char *err, size_t errsz) {
    char msg[200];
    codi_json *j;
    const codi_json *rs, *eos;
    double bos;
    int bad;
    j = codi_json_parse_strict(text, len, msg, sizeof msg);
    if (!j || j->type != CODI_JSON_OBJ) {
        codi__err(err, errsz, "%s: %s", path, j ? "not a JSON object" : msg);
        codi_json_free(j); return -1;
    }
    snprintf(src->path, sizeof src->path, "%s", path);
    src->found = 1;
    src->has_bos = codi_json_num(j, "bos_token_id", &bos);       /* null: none given */
    bad = codi__config_int(j, "hidden_size", 1, CODI__MAX_DIM, &c->dim, path, err, errsz) ||
          codi__config_int(j, "intermediate_size", 1, CODI__MAX_DIM, &c->ffn_dim, path, err, errsz) ||
          codi__config_int(j, "num_hidden_layers", 1, 4096, &c->n_layers, path, err, errsz) ||
          codi__config_int(j, "num_attention_heads", 1, CODI__MAX_DIM, &c->n_heads, path, err, errsz) ||
          codi__config_int(j, "num_key_value_heads", 1, CODI__MAX_DIM, &c->n_kv_heads, path, err, errsz) ||
          codi__config_int(j, "head_dim", 2, CODI__MAX_DIM, &c->head_dim, path, err, errsz) ||
          codi__config_pos_float(j, "rms_norm_eps", &c->norm_eps, path, err, errsz) ||
          codi__config_int(j, "bos_token_id", 0, INT_MAX, &c->bos_id, path, err, errsz) ||
          codi__config_int(j, "max_position_embeddings", 1, INT_MAX, &c->max_positions, path, err, errsz);
    c->rope_theta = 10000.0f;                             /* transformers' default when none is given */
    if (!bad) bad = codi__config_pos_float(j, "rope_theta", &c->rope_theta, path, err, errsz);
    if (!bad && (eos = codi_json_get(j, "eos_token_id")) != NULL && eos->type != CODI_JSON_NULL) {
        const codi_json *e = eos->type == CODI_JSON_ARR ? eos->child : eos;
        src->has_eos = 1;
        c->n_eos = 0;
        for (; e && !bad; e = eos->type == CODI_JSON_ARR ? e->next : NULL) {
            if (c->n_eos == 8) { codi__err(err, errsz, "%s: eos_token_id lists more than 8 ids", path); bad = 1; }
            else if (e->type != CODI_JSON_NUM || !codi__double_to_int(e->num, 0, INT_MAX, &c->eos_ids[c->n_eos++])) {
                codi__err(err, errsz, "%s: eos_token_id holds a value that is not a token id", path); bad = 1;
            }
        }
    }
    if (codi_json_get(j, "tie_word_embeddings")) *tie = codi_json_get(j, "tie_word_embeddings")->type == CODI_JSON_TRUE;
    rs = codi_json_get(j, "rope_parameters");           /* transformers 5 */
    if (!rs || rs->type != CODI_JSON_OBJ) rs = codi_json_get(j, "rope_scaling");
    if (!bad && rs && rs->type == CODI_JSON_OBJ) {
        const codi_json *type = codi_json_get(rs, "rope_type");
        if (!type) type = codi_json_get(rs, "type");
        bad = codi__config_pos_float(rs, "rope_theta", &c->rope_theta, path, err, errsz);
        c->rope_llama3 = 0;
        if (!bad && type && type->type == CODI_JSON_STR && !strcmp(type->str, "llama3")) {
            c->rope_llama3 = 1;
            bad = codi__config_pos_float(rs, "factor", &c->rope_factor, path, err, errsz) ||
                  codi__config_pos_float(rs, "low_freq_factor", &c->rope_low_freq_factor, path, err, errsz) ||
                  codi__config_pos_float(rs, "high_freq_factor", &c->rope_high_freq_factor, path, err, errsz) ||
                  codi__config_int(rs, "original_max_position_embeddings", 1, INT_MAX, &c->rope_original_max_pos, path, err, errsz);
            if (!bad && !(c->rope_high_freq_factor > c->rope_low_freq_factor)) {
                codi__err(err, errsz, "%s: rope_scaling high_freq_factor %g must be > low_freq_factor %g", path,
                          (double)c->rope_high_freq_factor, (double)c->rope_low_freq_factor);
                bad = 1;
            }
        } else if (!bad && type && type->type == CODI_JSON_STR && strcmp(type->str, "default") != 0) {
            codi__err(err, errsz, "%s: rope_type '%s' is not supported (llama3 and default are)", path, type->str);
            bad = 1;
        }
    } else if (!bad && rs && rs->type != CODI_JSON_NULL) {
        codi__err(err, errsz, "%s: rope_scaling is not an object", path); bad = 1;
    } else if (!bad) c->rope_llama3 = 0;   /* no rope_scaling (absent or null): plain RoPE, as transformers */
    codi_json_free(j);
    return bad ? -1 : 1;
}

/* config.json at path: 0 when absent, 1 when read, -1 with err (also when it is no regular file). */
static int codi__apply_config_json(codi_config *c, codi__config_src *src, const char *path, int *tie, char *err, size_t errsz) {
    size_t len;
    char *text;
    int rc;
    if (!codi__exists(path)) return 0;
    if (!(text = codi_read_text(path, &len))) { codi__err(err, errsz, "cannot read %s (not a regular file?)", path); return -1; }
    rc = codi__apply_config_text(c, src, text, len, path, tie, err, errsz);
    CODI_FREE(text);
    return rc;
}

/* The "codi_config" metadata codi_save_merged writes into a .safetensors file, applied like config.json. */
static int codi__apply_saved_config(codi_config *c, codi__config_src *src, const char *path, int *tie, char *err, size_t errsz) {
    codi_safetensors_file *f;
    const char *text;
    int rc = 0;
    if (!codi__ends_with(path, ".safetensors") || !(f = codi_safetensors_open(path, NULL, 0))) return 0;
    if ((text = codi_safetensors_metadata(f, "codi_config")) != NULL) rc = codi__apply_config_text(c, src, text, strlen(text), path, tie, err, errsz);
    codi_safetensors_close(f);
    return rc;
}

static int codi__is_dir(const char *path) {
#if !defined(_WIN32)
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
#else
    char probe[4096];
    FILE *fp;
    snprintf(probe, sizeof probe, "%s/.", path);
    fp = fopen(probe, "rb");
    if (fp) { fclose(fp); return 1; }
    return 0;
#endif
}

/* The one checkpoint (*.bin, *.safetensors) in directory dir into out; -1 with a message when
   there is none or more than one. */
static int codi__single_checkpoint(const char *dir, char *out, size_t outsz, char *err, size_t errsz) {
#if !defined(_WIN32)
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    char first[256] = "", second[256] = "";
    if (!d) { codi__err(err, errsz, "cannot list directory %s", dir); return -1; }
    while ((e = readdir(d)) != NULL) {
        if (!codi__ends_with(e->d_name, ".bin") && !codi__ends_with(e->d_name, ".safetensors")) continue;
        if (n == 0) snprintf(first, sizeof first, "%s", e->d_name);
        else if (n == 1) snprintf(second, sizeof second, "%s", e->d_name);
        n++;
    }
    closedir(d);
    if (n == 1) { snprintf(out, outsz, "%s/%s", dir, first); return 0; }
    if (n == 0) codi__err(err, errsz, "%s: no model.safetensors, index, pytorch_model.bin or other .bin/.safetensors checkpoint", dir);
    else codi__err(err, errsz, "%s holds %d checkpoints (%s, %s%s): give the file to load", dir, n, first, second, n > 2 ? ", ..." : "");
    return -1;
#else
    (void)out; (void)outsz;
    codi__err(err, errsz, "%s: no model.safetensors, index or pytorch_model.bin", dir);
    return -1;
#endif
}

/* Reads a checkpoint file or a directory: an HF directory (single or sharded safetensors,
   pytorch_model.bin), else the one checkpoint file it holds. */
static int codi__read_any(codi__tensors *ts, const char *path, int source, int verify_crc, char *err, size_t errsz) {
    char p[4096];
    if (codi__is_dir(path)) {
        size_t len;
        char *idx;
        snprintf(p, sizeof p, "%s/model.safetensors", path);
        if (codi__exists(p)) return codi__read_safetensors(ts, p, source, err, errsz);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
        if (codi__exists(p)) {                               /* sharded: every distinct file in weight_map */
            char msg[200], shard[4096];
            codi_json *j;
            const codi_json *wm, *e, *e2;
            if (!(idx = codi_read_text(p, &len))) { codi__err(err, errsz, "cannot read %s (not a regular file?)", p); return -1; }
            j = codi_json_parse(idx, len, msg, sizeof msg);
            wm = codi_json_get(j, "weight_map");
            CODI_FREE(idx);
            if (!j) { codi__err(err, errsz, "%s: %s", p, msg); return -1; }
            if (!wm || wm->type != CODI_JSON_OBJ) { codi__err(err, errsz, "%s: no weight_map", p); codi_json_free(j); return -1; }
            for (e = wm->child; e; e = e->next) {
                int seen = 0;
                if (e->type != CODI_JSON_STR || strchr(e->str, '/')) {
                    codi__err(err, errsz, "%s: bad shard name for %s (a file in the same directory expected)", p, e->key);
                    codi_json_free(j); return -1;
                }
                for (e2 = wm->child; e2 != e; e2 = e2->next) if (!strcmp(e2->str, e->str)) { seen = 1; break; }
                if (seen) continue;
                snprintf(shard, sizeof shard, "%s/%s", path, e->str);
                if (codi__read_safetensors(ts, shard, source, err, errsz) != 0) { codi_json_free(j); return -1; }
            }
            codi_json_free(j);
            return 0;
        }
        snprintf(p, sizeof p, "%s/pytorch_model.bin", path);
        if (!codi__exists(p) && codi__single_checkpoint(path, p, sizeof p, err, errsz) != 0) return -1;
        path = p;
    }
    if (codi__ends_with(path, ".safetensors")) return codi__read_safetensors(ts, path, source, err, errsz);
    return codi__read_torch_zip(ts, path, source, verify_crc, err, errsz);
}

CODI_API codi_load_opts codi_load_opts_default(void) {
    codi_load_opts o;
    const char *env = getenv("CODI_COMPUTE");
    memset(&o, 0, sizeof o);
    o.lora_scale = 0.25f;
    if (env && *env) o.compute = !strcmp(env, "bf16") ? CODI_COMPUTE_BF16 : !strcmp(env, "f32") ? CODI_COMPUTE_F32 : -1;   /* -1: codi_load says */
    return o;
}

static void codi__config_defaults(codi_config *c) {   /* Llama 3.2 1B Instruct */
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f; c->ln_eps = 1e-5f;
    c->rope_theta = 500000.0f; c->rope_llama3 = 1;
    c->rope_factor = 32.0f; c->rope_low_freq_factor = 1.0f; c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_pos = 8192;
    c->bos_id = 128000;
    c->eos_ids[0] = 128001; c->eos_ids[1] = 128008; c->eos_ids[2] = 128009; c->n_eos = 3;
}

static int codi__count_layers(const codi__tensors *ts) {
    int n = 0;
    char name[96];
    for (;;) {
        snprintf(name, sizeof name, "model.layers.%d.self_attn.q_proj.weight", n);
        if (!codi__tensors_find(ts, name)) return n;
        n++;
    }
}

/* The special-token ids against the vocabulary: ids a config.json or the options gave must lie
   inside it; the Llama 3 defaults that do not are dropped (bos -1, such eos ids removed), and
   codi_prompt_check says so when a prompt needs them. */
static int codi__check_token_ids(codi_config *c, const codi__config_src *src, const codi_load_opts *o, char *err, size_t errsz) {
    int i, k = 0;
    if (c->bos_id >= c->vocab) {
        if (src->has_bos) {
            codi__err(err, errsz, "%s: bos_token_id %d is outside the vocabulary (%d ids)", src->path, c->bos_id, c->vocab); return -1;
        }
        c->bos_id = -1;
    }
    for (i = 0; i < c->n_eos; i++) {
        if (c->eos_ids[i] < c->vocab) c->eos_ids[k++] = c->eos_ids[i];
        else if (src->has_eos) {
            codi__err(err, errsz, "%s: eos_token_id %d is outside the vocabulary (%d ids)", src->path, c->eos_ids[i], c->vocab); return -1;
        }
    }
    c->n_eos = k;
    if (c->eot_id >= c->vocab) {
        if (c->prj_dim || o->base_vocab > 0) {
            codi__err(err, errsz, "embedding has %d rows; the CODI tokens pad/bot/eot need ids %d..%d%s", c->vocab, c->pad_id, c->eot_id,
                      o->base_vocab > 0 ? " (opts.base_vocab)" : "");
            return -1;
        }
        c->pad_id = c->bot_id = c->eot_id = -1;      /* a plain Llama: no CODI tokens */
    }
    return 0;
}

static int codi__build(codi__loader *ld, const codi_load_opts *o, int tie, const codi__config_src *src) {
    codi_model *m = ld->m;
    codi_config *c = &m->config;
    codi__tensors *ts = &ld->in->ts;
    const codi__tensor *emb = codi__tensors_find(ts, "model.embed_tokens.weight"), *q, *k, *g, *lm, *p1;
    int dtype = o->exact ? CODI_F32 : CODI_BF16, l, base_vocab, cfg_heads = c->n_heads, cfg_kv = c->n_kv_heads;
    char pre[128];
    if (!emb || emb->ndim != 2) { codi__err(ld->err, ld->errsz, "missing tensor model.embed_tokens.weight (2-D)"); return -1; }
    if (emb->shape[0] > CODI__MAX_VOCAB || emb->shape[1] > CODI__MAX_DIM) {
        codi__err(ld->err, ld->errsz, "embed_tokens is [%lld, %lld]; at most [%d, %d] is supported",
                  (long long)emb->shape[0], (long long)emb->shape[1], CODI__MAX_VOCAB, CODI__MAX_DIM);
        return -1;
    }
    c->vocab = (int)emb->shape[0];
    if (c->dim && c->dim != emb->shape[1]) {
        codi__err(ld->err, ld->errsz, "%s: hidden_size %d but embed_tokens has %lld columns", src->path, c->dim, (long long)emb->shape[1]); return -1;
    }
    c->dim = (int)emb->shape[1];
    l = codi__count_layers(ts);
    if (c->n_layers && c->n_layers != l) { codi__err(ld->err, ld->errsz, "%s: num_hidden_layers %d, the checkpoint has %d", src->path, c->n_layers, l); return -1; }
    c->n_layers = l;
    if (l == 0 || c->dim <= 0 || c->vocab <= 0) { codi__err(ld->err, ld->errsz, "no transformer layers found"); return -1; }
    q = codi__tensors_find(ts, "model.layers.0.self_attn.q_proj.weight");
    k = codi__tensors_find(ts, "model.layers.0.self_attn.k_proj.weight");
    g = codi__tensors_find(ts, "model.layers.0.mlp.gate_proj.weight");
    if (!k || !g || q->ndim != 2 || k->ndim != 2 || g->ndim != 2) { codi__err(ld->err, ld->errsz, "layer 0 lacks 2-D k_proj/gate_proj weights"); return -1; }
    if (q->shape[0] > CODI__MAX_DIM || k->shape[0] > CODI__MAX_DIM || g->shape[0] > CODI__MAX_DIM) {
        codi__err(ld->err, ld->errsz, "layer 0: q_proj, k_proj or gate_proj has more than %d rows", CODI__MAX_DIM); return -1;
    }
    if (o->head_dim > 0) c->head_dim = o->head_dim;
    if (!c->head_dim && c->n_heads && c->dim % c->n_heads) {
        codi__err(ld->err, ld->errsz, "%s: num_attention_heads %d does not divide hidden_size %d", src->path, c->n_heads, c->dim); return -1;
    }
    if (!c->head_dim) c->head_dim = c->n_heads ? c->dim / c->n_heads : 64;
    if (c->head_dim <= 0 || q->shape[0] % c->head_dim || k->shape[0] % c->head_dim || k->shape[0] == 0) {
        codi__err(ld->err, ld->errsz, "q_proj rows %lld / k_proj rows %lld are not multiples of head_dim %d",
                  (long long)q->shape[0], (long long)k->shape[0], c->head_dim);
        return -1;
    }
    if ((cfg_heads && (int64_t)cfg_heads * c->head_dim != q->shape[0]) || (cfg_kv && (int64_t)cfg_kv * c->head_dim != k->shape[0])) {
        codi__err(ld->err, ld->errsz, "%s: %d heads and %d kv heads of head_dim %d%s do not match q_proj rows %lld and k_proj rows %lld",
                  src->path, cfg_heads, cfg_kv, c->head_dim, o->head_dim > 0 ? " (opts.head_dim)" : "",
                  (long long)q->shape[0], (long long)k->shape[0]);
        return -1;
    }
    c->n_heads = (int)(q->shape[0] / c->head_dim);
    c->n_kv_heads = (int)(k->shape[0] / c->head_dim);
    if (c->n_heads % c->n_kv_heads || c->head_dim % 2) { codi__err(ld->err, ld->errsz, "heads %d not a multiple of kv heads %d (or odd head_dim)", c->n_heads, c->n_kv_heads); return -1; }
    if (c->ffn_dim && c->ffn_dim != g->shape[0]) {
        codi__err(ld->err, ld->errsz, "%s: intermediate_size %d but gate_proj has %lld rows", src->path, c->ffn_dim, (long long)g->shape[0]); return -1;
    }
    c->ffn_dim = (int)g->shape[0];
    if (!(o->lora_scale >= -FLT_MAX && o->lora_scale <= FLT_MAX)) {
        codi__err(ld->err, ld->errsz, "lora_scale %g is not finite", (double)o->lora_scale); return -1;
    }
    c->lora_scale = o->lora_scale;
    p1 = codi__tensors_find(ts, "prj.1.weight");
    if (p1 && p1->ndim == 2 && p1->shape[0] > CODI__MAX_DIM) { codi__err(ld->err, ld->errsz, "prj.1.weight has more than %d rows", CODI__MAX_DIM); return -1; }
    c->prj_dim = p1 && p1->ndim == 2 ? (int)p1->shape[0] : 0;
    base_vocab = o->base_vocab > 0 ? o->base_vocab : c->prj_dim ? c->vocab - 3 : c->vocab;
    c->pad_id = base_vocab; c->bot_id = base_vocab + 1; c->eot_id = base_vocab + 2;
    if (codi__check_token_ids(c, src, o, ld->err, ld->errsz)) return -1;

    if (codi__load_matrix(ld, &m->w.embed, "model.embed_tokens", c->vocab, c->dim, dtype)) return -1;
    m->w.layers = (codi_layer *)codi__model_alloc(ld, (size_t)l * sizeof(codi_layer));
    if (!m->w.layers) return -1;
    for (l = 0; l < c->n_layers; l++) {
        codi_layer *ly = &m->w.layers[l];
        int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
#define CODI__MAT(field, nm, r, cc) \
        snprintf(pre, sizeof pre, "model.layers.%d.%s", l, nm); \
        if (codi__load_matrix(ld, &ly->field, pre, r, cc, dtype)) return -1;
        CODI__MAT(wq, "self_attn.q_proj", qd, c->dim)
        CODI__MAT(wk, "self_attn.k_proj", kvd, c->dim)
        CODI__MAT(wv, "self_attn.v_proj", kvd, c->dim)
        CODI__MAT(wo, "self_attn.o_proj", c->dim, qd)
        CODI__MAT(gate, "mlp.gate_proj", c->ffn_dim, c->dim)
        CODI__MAT(up, "mlp.up_proj", c->ffn_dim, c->dim)
        CODI__MAT(down, "mlp.down_proj", c->dim, c->ffn_dim)
#undef CODI__MAT
        snprintf(pre, sizeof pre, "model.layers.%d.input_layernorm.weight", l);
        if (!(ly->attn_norm = codi__load_vector(ld, pre, c->dim))) return -1;
        snprintf(pre, sizeof pre, "model.layers.%d.post_attention_layernorm.weight", l);
        if (!(ly->mlp_norm = codi__load_vector(ld, pre, c->dim))) return -1;
    }
    if (!(m->w.final_norm = codi__load_vector(ld, "model.norm.weight", c->dim))) return -1;
    lm = codi__tensors_find(ts, "lm_head.weight");
    if (lm && lm->data != emb->data) {
        if (codi__load_matrix(ld, &m->w.lm_head, "lm_head", c->vocab, c->dim, dtype)) return -1;
    } else if (!lm && !tie) {
        codi__err(ld->err, ld->errsz, "missing tensor lm_head.weight (config says embeddings are not tied)"); return -1;
    } else m->w.lm_head = m->w.embed;
    if (c->prj_dim) {
        if (codi__load_matrix(ld, &m->w.prj1, "prj.1", c->prj_dim, c->dim, CODI_F32) ||
            codi__load_matrix(ld, &m->w.prj3, "prj.3", c->dim, c->prj_dim, CODI_F32) ||
            !(m->w.prj1_b = codi__load_vector(ld, "prj.1.bias", c->prj_dim)) ||
            !(m->w.prj3_b = codi__load_vector(ld, "prj.3.bias", c->dim)) ||
            !(m->w.prj_ln_w = codi__load_vector(ld, "prj.ln.weight", c->dim)) ||
            !(m->w.prj_ln_b = codi__load_vector(ld, "prj.ln.bias", c->dim))) return -1;
    }
    return 0;
}

CODI_API void codi_model_free(codi_model *m) {
    codi__model_internal *in;
    int i;
    if (!m) return;
    in = (codi__model_internal *)m->internal;
    if (in) {
        for (i = 0; i < in->nbufs; i++) CODI_FREE(in->bufs[i]);
        CODI_FREE(in->bufs);
        codi__tensors_free(&in->ts);
        CODI_FREE(in);
    }
    CODI_FREE(m->tensors);
    CODI_FREE(m);
}

static void codi__dirname(const char *path, char *out, size_t outsz) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, outsz, ".");
    else snprintf(out, outsz, "%.*s", (int)(slash - path), path);
}

CODI_API codi_model *codi_load(const char *path, const codi_load_opts *opts, char *err, size_t errsz) {
    codi_load_opts o = opts ? *opts : codi_load_opts_default();
    codi_model *m = (codi_model *)CODI_MALLOC(sizeof *m);
    codi__model_internal *in = (codi__model_internal *)CODI_MALLOC(sizeof *in);
    codi__loader ld;
    char cfg[4200], dir[4000];
    codi__config_src src;
    int tie = 1, rc, i;
    if (err && errsz) err[0] = 0;
    (void)codi__kernel_active();      /* the kernel path chosen here, before any thread of a run can read it */
    if (!m || !in) { CODI_FREE(m); CODI_FREE(in); codi__err(err, errsz, "out of memory"); return NULL; }
    if (o.compute != CODI_COMPUTE_F32 && o.compute != CODI_COMPUTE_BF16) {
        codi__err(err, errsz, "compute mode %d is neither f32 nor bf16 (CODI_COMPUTE=f32|bf16 in the environment, or "
                  "codi_load_opts.compute)", o.compute);
        CODI_FREE(m); CODI_FREE(in); return NULL;
    }
    if (o.compute == CODI_COMPUTE_BF16 && o.exact) {
        codi__err(err, errsz, "bf16 compute multiplies bf16 weights; exact (f32) weights would run in f32 unchanged: drop one of them");
        CODI_FREE(m); CODI_FREE(in); return NULL;
    }
    if (o.compute == CODI_COMPUTE_BF16 && !codi__compute_bf16_runs()) {
        codi__err(err, errsz, "bf16 compute needs a CPU with AVX512-BF16 (vdpbf16ps: AMD Zen 4, Intel Cooper Lake, Sapphire "
                  "Rapids or later) and an x86-64 GCC/clang build; this one has none");
        CODI_FREE(m); CODI_FREE(in); return NULL;
    }
    memset(m, 0, sizeof *m); memset(in, 0, sizeof *in);
    m->internal = in; m->exact = o.exact; m->compute = o.compute;
    ld.m = m; ld.in = in; ld.err = err; ld.errsz = errsz; ld.pool = NULL; ld.n_threads = 1;
#ifdef CODI_THREADS
    if (o.n_threads > 1 && (ld.pool = codi__pool_new(o.n_threads)) != NULL) ld.n_threads = o.n_threads;
#endif
    codi__config_defaults(&m->config);
    memset(&src, 0, sizeof src);
    snprintf(src.path, sizeof src.path, "(no config.json)");
    if (o.base && codi__read_any(&in->ts, o.base, 1, !o.skip_crc, err, errsz) != 0) goto fail;
    if (codi__read_any(&in->ts, path, 0, !o.skip_crc, err, errsz) != 0) goto fail;
    /* config.json: beside the checkpoint (or inside the directory), else in the base */
    if (codi__is_dir(path)) snprintf(dir, sizeof dir, "%s", path); else codi__dirname(path, dir, sizeof dir);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    rc = codi__apply_config_json(&m->config, &src, cfg, &tie, err, errsz);
    if (rc == 0 && o.base) {
        snprintf(cfg, sizeof cfg, "%s/config.json", o.base);
        rc = codi__apply_config_json(&m->config, &src, cfg, &tie, err, errsz);
    }
    if (rc >= 0 && codi__apply_saved_config(&m->config, &src, path, &tie, err, errsz) < 0) rc = -1;
    if (rc < 0 || codi__build(&ld, &o, tie, &src) != 0) goto fail;
    m->tensors = (codi_tensor_info *)CODI_MALLOC((size_t)(in->ts.n ? in->ts.n : 1) * sizeof *m->tensors);
    if (!m->tensors) { codi__err(err, errsz, "out of memory"); goto fail; }
    for (i = 0; i < in->ts.n; i++) {
        codi_tensor_info *ti = &m->tensors[i];
        const codi__tensor *t = &in->ts.t[i];
        snprintf(ti->name, sizeof ti->name, "%s", t->name);
        ti->source = t->source; ti->dtype = t->dtype; ti->ndim = t->ndim;
        memcpy(ti->shape, t->shape, sizeof ti->shape);
    }
    m->n_tensors = in->ts.n;
#ifdef CODI_THREADS
    codi__pool_free(ld.pool);
#endif
    return m;
fail:
#ifdef CODI_THREADS
    codi__pool_free(ld.pool);
#endif
    codi_model_free(m);
    return NULL;
}

/* ======== APPENDIX B. FAST PATHS: the thread pool, the SIMD kernels, the batched runner ========= */

/* >>threads: the one place with parallelism. fn(ctx, tid, start, end) runs over [0, total)
   split into one slice per thread; without CODI_THREADS it runs inline as one slice. */


#ifdef CODI_THREADS
/* A fixed pool: run(fn) bumps a generation counter; every worker and the caller each do their
   fixed slice, and the caller waits until `pending` reaches 0. Waiting spins on the counter for
   a short while (a token makes ~100 calls 20-500 us apart), then sleeps on a condition variable.
   Atomics are GCC/clang builtins; other compilers always sleep. */
#if defined(__GNUC__) || defined(__clang__)
#define CODI__LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define CODI__STORE(x, v) __atomic_store_n(&(x), v, __ATOMIC_RELEASE)
#define CODI__DEC(x) __atomic_sub_fetch(&(x), 1, __ATOMIC_ACQ_REL)
#define CODI__SPINS 4000
#if defined(__x86_64__) || defined(__i386__)
#define CODI__PAUSE() __builtin_ia32_pause()
#else
#define CODI__PAUSE() ((void)0)
#endif
#else
#define CODI__LOAD(x) (x)
#define CODI__STORE(x, v) ((x) = (v))
#define CODI__DEC(x) (--(x))
#define CODI__SPINS 0
#define CODI__PAUSE() ((void)0)
#endif
struct codi__pool {
    pthread_t *threads; int n;          /* n - 1 workers; the caller is thread 0 */
    pthread_mutex_t mu; pthread_cond_t go, done;
    codi__task_fn fn; void *ctx; int total;
    unsigned long generation; int pending, quit;
};
typedef struct { codi__pool *p; int tid; } codi__worker_arg;
static void codi__pool_slice(codi__pool *p, int tid) {
    int per = (p->total + p->n - 1) / p->n, s = tid * per, e = s + per;
    if (e > p->total) e = p->total;
    if (s < e) p->fn(p->ctx, tid, s, e);
}
static void *codi__worker(void *arg) {
    codi__worker_arg *wa = (codi__worker_arg *)arg;
    codi__pool *p = wa->p;
    int tid = wa->tid, spin;
    unsigned long seen = 0;
    CODI_FREE(wa);
    for (;;) {
        for (spin = 0; spin < CODI__SPINS && CODI__LOAD(p->generation) == seen; spin++) CODI__PAUSE();
        if (CODI__LOAD(p->generation) == seen) {
            pthread_mutex_lock(&p->mu);
            while (CODI__LOAD(p->generation) == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (CODI__LOAD(p->quit)) return NULL;
        seen = CODI__LOAD(p->generation);
        codi__pool_slice(p, tid);
        if (CODI__DEC(p->pending) == 0) {      /* the last one wakes the caller if it sleeps */
            pthread_mutex_lock(&p->mu); pthread_cond_signal(&p->done); pthread_mutex_unlock(&p->mu);
        }
    }
}
static codi__pool *codi__pool_new(int n) {
    codi__pool *p = (codi__pool *)CODI_MALLOC(sizeof *p);
    int i;
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    if (!(p->threads = (pthread_t *)CODI_MALLOC(sizeof(pthread_t) * (size_t)n))) { CODI_FREE(p); return NULL; }
    pthread_mutex_init(&p->mu, NULL); pthread_cond_init(&p->go, NULL); pthread_cond_init(&p->done, NULL);
    p->n = 1;
    for (i = 1; i < n; i++) {               /* the pool is as large as the threads that started */
        codi__worker_arg *wa = (codi__worker_arg *)CODI_MALLOC(sizeof *wa);
        if (!wa) break;
        wa->p = p; wa->tid = i;
        if (pthread_create(&p->threads[i], NULL, codi__worker, wa) != 0) { CODI_FREE(wa); break; }
        p->n++;
    }
    return p;
}
static void codi__pool_run(codi__pool *p, codi__task_fn fn, void *ctx, int total) {
    int spin;
    p->fn = fn; p->ctx = ctx; p->total = total;
    CODI__STORE(p->pending, p->n - 1);
    pthread_mutex_lock(&p->mu);             /* a worker checks the counter under mu before it sleeps */
    CODI__STORE(p->generation, p->generation + 1);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    codi__pool_slice(p, 0);
    for (spin = 0; spin < CODI__SPINS && CODI__LOAD(p->pending) > 0; spin++) CODI__PAUSE();
    if (CODI__LOAD(p->pending) > 0) {
        pthread_mutex_lock(&p->mu);
        while (CODI__LOAD(p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
static void codi__pool_free(codi__pool *p) {
    int i;
    if (!p) return;
    pthread_mutex_lock(&p->mu); CODI__STORE(p->quit, 1); CODI__STORE(p->generation, p->generation + 1);
    pthread_cond_broadcast(&p->go); pthread_mutex_unlock(&p->mu);
    for (i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu); pthread_cond_destroy(&p->go); pthread_cond_destroy(&p->done);
    CODI_FREE(p->threads); CODI_FREE(p);
}
#else
#endif

/* >>simd: the same products vectorised per instruction set, one path chosen at run time ------
   A path is a GEMV (decode: out[r] = x . W[r,:], bf16 widened inside the dot, one row at a time
   up to GEMV_ROW_MAX columns),
   a multi-position GEMV (2..63 positions: batched decode, short chunks; a register tile of
   weight rows x positions, codi__gemvn_blocks) and a GEMM micro-kernel (prefill: an MR x NR tile of out[i, r] from packed panels). The
   x86 paths are compiled with function-level target attributes and chosen by CPUID, so a plain
   `cc -O2` build runs them where the CPU has them; other compilers get the scalar path.
   CODI_NO_SIMD (or its old name CODI_SCALAR) builds the scalar path only; CODI_KERNEL=name in the
   environment picks one. The amx
   path adds `tiles`, which takes every product of AMX_MIN+ positions with bf16 weights. */

/* By shape: decode is a GEMV that widens bf16 inside the dot, one row at a time (4 past 4096
   columns); 2..63 positions (batched decode, short chunks) the same with a register tile of 3
   weight rows x 8 (avx512) or 4 (avx2) positions; 64+ a packed-panel GEMM over up to 512 positions
   per pass, and prefill attention as GEMMs per kv head; decode attention (every batched step) one
   call per row and kv head: scores in blocks of positions, softmax, weighted values (the same bits
   as a dot and an axpy per position). amx (Sapphire Rapids and later, Linux, bf16 weights) runs
   every product of 9+ positions on the AMX tiles; it and the opt-in avx512bf16 multiply x split
   into two bf16 parts, hi + lo (x to 2^-16), so both stay within the f32 path's tolerances (~5e-5
   logit difference on the tiny golden). With CODI_THREADS the pool's workers spin briefly, then
   sleep. Opt-in bf16 compute (codi_load_opts.compute = CODI_COMPUTE_BF16, or CODI_COMPUTE=bf16 in
   the environment; CPUs with AVX512-BF16): every product of the forward pass with bf16 weights
   takes its activations rounded to bf16 and multiplies with vdpbf16ps (f32 sums), as llama.cpp's
   BF16 and Hugging Face's bfloat16 matmuls do: prefill and batched steps ~1.6x faster on Zen 4
   (vdpbf16ps: twice the FMA peak), at the price of 8 significant bits in every product's input
   (drift: README, Speed). Never the default; norms, attention, the residual stream, prj and the
   lenses stay f32; batched and single-stream runs then agree to bf16 rounding, not bit for bit. */

#if !defined(CODI_NO_SIMD) && (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CODI__X86 1
#include <immintrin.h>
#define CODI__AVX2 __attribute__((target("avx2,fma")))
#define CODI__AVX512 __attribute__((target("avx512f,avx512bw,avx2,fma")))
#define CODI__AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma")))
#define CODI__INLINE __attribute__((always_inline)) inline   /* inside a kernel's loop: no call per use */
#if defined(__clang__) ? __clang_major__ >= 12 : __GNUC__ >= 11    /* compilers with the AMX intrinsics */
#define CODI__AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16,avx2,fma")))
#endif
#endif
#if !defined(CODI_NO_SIMD) && defined(__aarch64__) && defined(__ARM_NEON)
#define CODI__NEON 1
#include <arm_neon.h>
#endif



#if defined(CODI__X86) || defined(CODI__NEON)
/* Four row pointers starting at row r of w (the last row repeated past r1). */
static void codi__rows4(const void *p[4], const codi_matrix *w, int r, int r1) {
    int k;
    for (k = 0; k < 4; k++)
        p[k] = (const char *)w->data + (size_t)(r + k < r1 ? r + k : r1 - 1) * w->cols * codi__dtype_size(w->dtype);
}
#endif

/* Activations x [n, K] (row stride ldx), columns k0..k0+kb, as strips of mr positions:
   a [strips][kb][mr], zero past position n. */
static void codi__pack_a(float *a, const float *x, size_t ldx, int n, int k0, int kb, int mr) {
    int s, i, k;
    for (s = 0; s * mr < n; s++, a += (size_t)kb * mr)
        for (i = 0; i < mr; i++) {
            const float *xi = x + (size_t)(s * mr + i) * ldx + k0;
            if (s * mr + i < n) for (k = 0; k < kb; k++) a[(size_t)k * mr + i] = xi[k];
            else for (k = 0; k < kb; k++) a[(size_t)k * mr + i] = 0;
        }
}

/* Two bf16 as one 32-bit lane, the first in the low half (the order vdpbf16ps pairs them). */
static uint32_t codi__bf16_pair(uint16_t lo, uint16_t hi) { return (uint32_t)lo | (uint32_t)hi << 16; }

/* x as two bf16 parts: hi = bf16(x), lo = bf16(x - hi) (together x to ~16 significant bits). */
static uint16_t codi__bf16_lo(float x) { return codi__f32_to_bf16(x - codi__bf16_to_f32(codi__f32_to_bf16(x))); }

/* As codi__pack_a, as bf16 pairs split into hi and lo parts: a [strips][ceil(kb/2)][hi, lo][mr];
   parts 1: the hi parts alone (x rounded to bf16), a [strips][ceil(kb/2)][mr]. */
static void codi__pack_a_bf16(uint32_t *a, const float *x, size_t ldx, int n, int k0, int kb, int mr, int parts) {
    int s, i, k, kp = (kb + 1) / 2;
    for (s = 0; s * mr < n; s++, a += (size_t)kp * parts * mr)
        for (i = 0; i < mr; i++) {
            const float *xi = x + (size_t)(s * mr + i) * ldx + k0;
            for (k = 0; k < kp; k++) {
                int in = s * mr + i < n, two = in && 2 * k + 1 < kb;
                a[(size_t)k * parts * mr + i] = !in ? 0 : codi__bf16_pair(codi__f32_to_bf16(xi[2 * k]), two ? codi__f32_to_bf16(xi[2 * k + 1]) : 0);
                if (parts == 2)
                    a[(size_t)k * 2 * mr + mr + i] = !in ? 0 : codi__bf16_pair(codi__bf16_lo(xi[2 * k]), two ? codi__bf16_lo(xi[2 * k + 1]) : 0);
            }
        }
}

/* Weight rows r0..r0+nrows, columns k0..k0+kb, as b [kb][nr] in f32 (bf16 widened here, once
   per panel), zero past nrows. */
static void codi__pack_b(float *b, const codi_matrix *w, int r0, int nrows, int k0, int kb, int nr) {
    int j, k;
    for (j = 0; j < nr; j++) {
        if (j >= nrows) { for (k = 0; k < kb; k++) b[(size_t)k * nr + j] = 0; continue; }
        if (w->dtype == CODI_BF16) {
            const uint16_t *row = (const uint16_t *)w->data + (size_t)(r0 + j) * w->cols + k0;
            for (k = 0; k < kb; k++) b[(size_t)k * nr + j] = codi__bf16_to_f32(row[k]);
        } else {
            const float *row = (const float *)w->data + (size_t)(r0 + j) * w->cols + k0;
            for (k = 0; k < kb; k++) b[(size_t)k * nr + j] = row[k];
        }
    }
}

/* bf16 weight rows as pairs: b [ceil(kb/2)][nr]. */
static void codi__pack_b_bf16(uint32_t *b, const codi_matrix *w, int r0, int nrows, int k0, int kb, int nr) {
    int j, k, kp = (kb + 1) / 2;
    for (j = 0; j < nr; j++) {
        const uint16_t *row = (const uint16_t *)w->data + (size_t)(r0 + j) * w->cols + k0;
        for (k = 0; k < kp; k++)
            b[(size_t)k * nr + j] = j >= nrows ? 0 : codi__bf16_pair(row[2 * k], 2 * k + 1 < kb ? row[2 * k + 1] : 0);
    }
}

#ifdef CODI__X86
/* The multi-position GEMV (2..GEMM_MIN-1 positions: batched decode, short chunks), shared by the
   x86 paths. A tile is R weight rows x P positions held in registers: each weight vector is
   widened once and multiplied into P positions, each x vector loaded once for R rows. The
   activations are first copied into work, 64-byte aligned, with a row stride that is not a
   multiple of 4 KiB (rows 8 KiB apart fall into the same L1 sets; unaligned rows split every
   load over two lines: both cost ~30%); work (codi__work_floats) holds all K columns of every
   position (blocks of columns measured 10-25% slower). While a row group's first position group
   runs, the next row group's rows are prefetched. */
#define CODI__GEMVN_R 3
/* out[b * ldo + a] = x_b . W[row a] over kb columns, for rows w[a] (a < nrows; 3 pointers) and
   positions x + b * ldx (b < np; the tile's P at most); pf: the rows to prefetch, or NULL. */
typedef void (*codi__tile_fn)(float *out, size_t ldo, const float *x, size_t ldx, int np, const void *const *w, int nrows,
                              int dtype, int kb, const void *const *pf);

static void codi__gemvn_blocks(codi__tile_fn tile, int P, float *out, size_t ldo, const float *x, int n,
                               const codi_matrix *w, int r0, int r1, float *work) {
    size_t K = (size_t)w->cols, es = codi__dtype_size(w->dtype), ldx = K + 16;
    float *xs = (float *)(void *)(((uintptr_t)work + 63) & ~(uintptr_t)63);   /* [n, ldx] staged x */
    int r, i0, a, i;
    for (i = 0; i < n; i++) memcpy(xs + (size_t)i * ldx, x + (size_t)i * K, K * sizeof(float));
    for (r = r0; r < r1; r += CODI__GEMVN_R) {
        const void *rows[CODI__GEMVN_R], *next[CODI__GEMVN_R];
        for (a = 0; a < CODI__GEMVN_R; a++) {
            size_t ra = (size_t)(r + a < r1 ? r + a : r1 - 1), rn = (size_t)(r + CODI__GEMVN_R + a < r1 ? r + CODI__GEMVN_R + a : r1 - 1);
            rows[a] = (const char *)w->data + ra * K * es;
            next[a] = (const char *)w->data + rn * K * es;
        }
        for (i0 = 0; i0 < n; i0 += P)
            tile(out + (size_t)i0 * ldo + (r - r0), ldo, xs + (size_t)i0 * ldx, ldx, n - i0 < P ? n - i0 : P, rows,
                 r1 - r < CODI__GEMVN_R ? r1 - r : CODI__GEMVN_R, w->dtype, (int)K, i0 == 0 ? next : NULL);
    }
}
CODI__AVX2 static float codi__hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* 8 bf16 at p widened to f32 (a bf16 is the top half of an f32) */
CODI__AVX2 static __m256 codi__bf16x8_avx2(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p)), 16));
}
/* a . b over the first n - n % 8 columns, before the horizontal sum (four accumulators). */
CODI__AVX2 static CODI__INLINE __m256 codi__dotv_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    return _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
}
CODI__AVX2 static float codi__dot_avx2(const float *a, const float *b, int n) {
    float s = codi__hsum_avx2(codi__dotv_avx2(a, b, n));
    int i;
    for (i = n - n % 8; i < n; i++) s += a[i] * b[i];
    return s;
}
/* Rows of more than GEMV_ROW_MAX columns (x leaves L1 if read once per row): 4 rows per pass, 16 columns per step, two accumulators per row; prefetch 1 KB ahead. */
CODI__AVX2 static void codi__gemv4_avx2(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    int K = w->cols, r, j, k;
    (void)xh;
    for (r = r0; r < r1; r += 4) {
        const void *p[4];
        __m256 acc[8];
        float s[4];
        codi__rows4(p, w, r, r1);
        for (k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
        j = 0;
        if (w->dtype == CODI_BF16) {
            const uint16_t *w0 = (const uint16_t *)p[0], *w1 = (const uint16_t *)p[1], *w2 = (const uint16_t *)p[2], *w3 = (const uint16_t *)p[3];
            for (; j + 16 <= K; j += 16) {
                __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
                _mm_prefetch((const char *)(w0 + j) + 1024, _MM_HINT_T0); _mm_prefetch((const char *)(w1 + j) + 1024, _MM_HINT_T0);
                _mm_prefetch((const char *)(w2 + j) + 1024, _MM_HINT_T0); _mm_prefetch((const char *)(w3 + j) + 1024, _MM_HINT_T0);
                acc[0] = _mm256_fmadd_ps(codi__bf16x8_avx2(w0 + j), x0, acc[0]); acc[1] = _mm256_fmadd_ps(codi__bf16x8_avx2(w0 + j + 8), x1, acc[1]);
                acc[2] = _mm256_fmadd_ps(codi__bf16x8_avx2(w1 + j), x0, acc[2]); acc[3] = _mm256_fmadd_ps(codi__bf16x8_avx2(w1 + j + 8), x1, acc[3]);
                acc[4] = _mm256_fmadd_ps(codi__bf16x8_avx2(w2 + j), x0, acc[4]); acc[5] = _mm256_fmadd_ps(codi__bf16x8_avx2(w2 + j + 8), x1, acc[5]);
                acc[6] = _mm256_fmadd_ps(codi__bf16x8_avx2(w3 + j), x0, acc[6]); acc[7] = _mm256_fmadd_ps(codi__bf16x8_avx2(w3 + j + 8), x1, acc[7]);
            }
            for (k = 0; k < 4; k++) {
                int t;
                s[k] = codi__hsum_avx2(_mm256_add_ps(acc[2 * k], acc[2 * k + 1]));
                for (t = j; t < K; t++) s[k] += x[t] * codi__bf16_to_f32(((const uint16_t *)p[k])[t]);
            }
        } else {
            const float *w0 = (const float *)p[0], *w1 = (const float *)p[1], *w2 = (const float *)p[2], *w3 = (const float *)p[3];
            for (; j + 16 <= K; j += 16) {
                __m256 x0 = _mm256_loadu_ps(x + j), x1 = _mm256_loadu_ps(x + j + 8);
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), x0, acc[0]); acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j + 8), x1, acc[1]);
                acc[2] = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), x0, acc[2]); acc[3] = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j + 8), x1, acc[3]);
                acc[4] = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), x0, acc[4]); acc[5] = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j + 8), x1, acc[5]);
                acc[6] = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), x0, acc[6]); acc[7] = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j + 8), x1, acc[7]);
            }
            for (k = 0; k < 4; k++) {
                int t;
                s[k] = codi__hsum_avx2(_mm256_add_ps(acc[2 * k], acc[2 * k + 1]));
                for (t = j; t < K; t++) s[k] += x[t] * ((const float *)p[k])[t];
            }
        }
        for (k = 0; k < 4 && r + k < r1; k++) out[r + k - r0] = s[k];
    }
}
/* Rows up to GEMV_ROW_MAX columns one at a time, 32 columns (64 bytes of bf16) per step, four
   accumulators: each thread's rows are then one sequential stream, which the hardware prefetcher
   follows (4 rows interleaved with software prefetches streamed ~35% slower at 2048 columns;
   tools/bench_gemv.c); x stays in L1. */
CODI__AVX2 static void codi__gemv_avx2(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    int K = w->cols, r, j;
    if (K > CODI__GEMV_ROW_MAX) { codi__gemv4_avx2(out, x, xh, w, r0, r1); return; }
    for (r = r0; r < r1; r++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        float s;
        if (w->dtype == CODI_BF16) {
            const uint16_t *p = (const uint16_t *)w->data + (size_t)r * K;
            for (j = 0; j + 32 <= K; j += 32) {
                a0 = _mm256_fmadd_ps(codi__bf16x8_avx2(p + j), _mm256_loadu_ps(x + j), a0);
                a1 = _mm256_fmadd_ps(codi__bf16x8_avx2(p + j + 8), _mm256_loadu_ps(x + j + 8), a1);
                a2 = _mm256_fmadd_ps(codi__bf16x8_avx2(p + j + 16), _mm256_loadu_ps(x + j + 16), a2);
                a3 = _mm256_fmadd_ps(codi__bf16x8_avx2(p + j + 24), _mm256_loadu_ps(x + j + 24), a3);
            }
            s = codi__hsum_avx2(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
            for (; j < K; j++) s += x[j] * codi__bf16_to_f32(p[j]);
        } else s = codi__dot_avx2(x, (const float *)w->data + (size_t)r * K, K);
        out[r - r0] = s;
    }
}
/* The multi-position GEMV tile (codi__gemvn_blocks): 3 rows x 4 positions, 12 accumulators;
   per 8 columns 3 widenings (2 instructions each) feed 12 FMAs. */
CODI__AVX2 static void codi__tile_avx2(float *out, size_t ldo, const float *x, size_t ldx, int np, const void *const *w, int nrows,
                                       int dtype, int kb, const void *const *pf) {
    const float *xp[4];
    __m256 c[12], w0, w1, w2, xv;
    int j = 0, a, b;
    for (b = 0; b < 4; b++) xp[b] = x + (size_t)(b < np ? b : np - 1) * ldx;
    for (a = 0; a < 12; a++) c[a] = _mm256_setzero_ps();
#define CODI__FMA3(b) do { xv = _mm256_loadu_ps(xp[b] + j); c[b] = _mm256_fmadd_ps(w0, xv, c[b]); \
        c[4 + b] = _mm256_fmadd_ps(w1, xv, c[4 + b]); c[8 + b] = _mm256_fmadd_ps(w2, xv, c[8 + b]); } while (0)
#define CODI__STEP(W) do { w0 = W(w[0]); w1 = W(w[1]); w2 = W(w[2]); CODI__FMA3(0); CODI__FMA3(1); CODI__FMA3(2); CODI__FMA3(3); } while (0)
#define CODI__BF16(row) codi__bf16x8_avx2((const uint16_t *)(row) + j)
#define CODI__F32(row) _mm256_loadu_ps((const float *)(row) + j)
#define CODI__PF(bytes) do { if (pf) for (a = 0; a < 3; a++) _mm_prefetch((const char *)pf[a] + (bytes), _MM_HINT_T0); } while (0)
    if (dtype == CODI_BF16)
        for (; j + 8 <= kb; j += 8) { if (j % 32 == 0) CODI__PF(2 * j); CODI__STEP(CODI__BF16); }
    else
        for (; j + 8 <= kb; j += 8) { if (j % 16 == 0) CODI__PF(4 * j); CODI__STEP(CODI__F32); }
#undef CODI__PF
#undef CODI__F32
#undef CODI__BF16
#undef CODI__STEP
#undef CODI__FMA3
    for (a = 0; a < nrows; a++)
        for (b = 0; b < np; b++) {
            float s = codi__hsum_avx2(c[4 * a + b]);
            int t;
            for (t = j; t < kb; t++) s += xp[b][t] * codi_elem_f32(w[a], dtype, (size_t)t);
            out[(size_t)b * ldo + a] = s;
        }
}
CODI__AVX2 static void codi__gemvn_avx2(float *out, size_t ldo, const float *x, int n, const codi_matrix *w, int r0, int r1, float *work) {
    codi__gemvn_blocks(codi__tile_avx2, 4, out, ldo, x, n, w, r0, r1, work);
}
/* 6 positions x 16 rows: 12 accumulators; a [kb][6], b [kb][16] */
CODI__AVX2 static void codi__micro_avx2(int kb, const void *av, const void *bv, float *c, size_t ldc, int add) {
    const float *a = (const float *)av, *b = (const float *)bv;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    int k;
    for (k = 0; add && k < 6; k++) { _mm_prefetch((const char *)(c + (size_t)k * ldc), _MM_HINT_T0); _mm_prefetch((const char *)(c + (size_t)k * ldc + 15), _MM_HINT_T0); }
    for (k = 0; k < kb; k++, a += 6, b += 16) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), t;
        t = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(t, b0, c00); c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(t, b0, c10); c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(t, b0, c20); c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(t, b0, c30); c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(t, b0, c40); c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(t, b0, c50); c51 = _mm256_fmadd_ps(t, b1, c51);
    }
#define CODI__ST(row, lo, hi) do { float *cr = c + (size_t)(row) * ldc; \
        if (add) { lo = _mm256_add_ps(lo, _mm256_loadu_ps(cr)); hi = _mm256_add_ps(hi, _mm256_loadu_ps(cr + 8)); } \
        _mm256_storeu_ps(cr, lo); _mm256_storeu_ps(cr + 8, hi); } while (0)
    CODI__ST(0, c00, c01); CODI__ST(1, c10, c11); CODI__ST(2, c20, c21);
    CODI__ST(3, c30, c31); CODI__ST(4, c40, c41); CODI__ST(5, c50, c51);
#undef CODI__ST
}

/* r[t] = row t of an 8 x 8 block of 32-bit lanes -> r[t] = column t. */
CODI__AVX2 static inline void codi__transpose8_avx2(__m256 r[8]) {
    __m256 u[8];
    int t;
    for (t = 0; t < 8; t += 2) { u[t] = _mm256_unpacklo_ps(r[t], r[t + 1]); u[t + 1] = _mm256_unpackhi_ps(r[t], r[t + 1]); }
    r[0] = _mm256_shuffle_ps(u[0], u[2], 0x44); r[1] = _mm256_shuffle_ps(u[0], u[2], 0xee);
    r[2] = _mm256_shuffle_ps(u[1], u[3], 0x44); r[3] = _mm256_shuffle_ps(u[1], u[3], 0xee);
    r[4] = _mm256_shuffle_ps(u[4], u[6], 0x44); r[5] = _mm256_shuffle_ps(u[4], u[6], 0xee);
    r[6] = _mm256_shuffle_ps(u[5], u[7], 0x44); r[7] = _mm256_shuffle_ps(u[5], u[7], 0xee);
    for (t = 0; t < 4; t++) { u[t] = _mm256_permute2f128_ps(r[t], r[t + 4], 0x20); u[t + 4] = _mm256_permute2f128_ps(r[t], r[t + 4], 0x31); }
    for (t = 0; t < 8; t++) r[t] = u[t];
}
/* As codi__pack_b, 8 rows at a time, transposed in registers. bf16: 16 columns per step, each
   row's read as 8 pairs (32-bit lanes) and the pairs transposed, then split into two f32 each
   (low half: shift left 16, high half: mask): the widening costs no shuffles. f32: 8 columns per
   step. */
CODI__AVX2 static void codi__pack_b_avx2(float *b, const codi_matrix *w, int r0, int nrows, int k0, int kb, int nr) {
    size_t K = (size_t)w->cols, es = codi__dtype_size(w->dtype);
    int j, k, t, step = w->dtype == CODI_BF16 ? 16 : 8;
    if (nrows < nr || nr % 8) { codi__pack_b(b, w, r0, nrows, k0, kb, nr); return; }
    for (j = 0; j < nr; j += 8) {
        for (k = 0; k + step <= kb; k += step) {
            __m256 r[8];
            for (t = 0; t < 8; t++)
                r[t] = _mm256_loadu_ps((const float *)(const void *)((const char *)w->data + ((size_t)(r0 + j + t) * K + k0 + k) * es));
            codi__transpose8_avx2(r);
            if (step == 8) { for (t = 0; t < 8; t++) _mm256_storeu_ps(b + (size_t)(k + t) * nr + j, r[t]); continue; }
            for (t = 0; t < 8; t++) {                                       /* r[t]: columns k + 2t, k + 2t + 1 */
                __m256i v = _mm256_castps_si256(r[t]);
                _mm256_storeu_ps(b + (size_t)(k + 2 * t) * nr + j, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
                _mm256_storeu_ps(b + (size_t)(k + 2 * t + 1) * nr + j, _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u))));
            }
        }
        for (; k < kb; k++)
            for (t = 0; t < 8; t++) b[(size_t)k * nr + j + t] = codi_elem_f32(w->data, w->dtype, (size_t)(r0 + j + t) * K + k0 + k);
    }
}
/* codi__pack_a by 8 x 8 blocks transposed in registers (a strip's rows in groups of up to 8). */
CODI__AVX2 static void codi__pack_a_avx2(float *a, const float *x, size_t ldx, int n, int k0, int kb, int mr) {
    int s, i0, k, t;
    for (s = 0; s * mr + mr <= n; s++, a += (size_t)kb * mr) {
        const float *xs = x + (size_t)s * mr * ldx + k0;
        for (i0 = 0; i0 < mr; i0 += 8) {
            int nrow = mr - i0 < 8 ? mr - i0 : 8;
            __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(nrow), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            for (k = 0; k + 8 <= kb; k += 8) {
                __m256 r[8];
                for (t = 0; t < 8; t++) r[t] = t < nrow ? _mm256_loadu_ps(xs + (size_t)(i0 + t) * ldx + k) : _mm256_setzero_ps();
                codi__transpose8_avx2(r);
                for (t = 0; t < 8; t++) _mm256_maskstore_ps(a + (size_t)(k + t) * mr + i0, keep, r[t]);
            }
            for (; k < kb; k++)
                for (t = 0; t < nrow; t++) a[(size_t)k * mr + i0 + t] = xs[(size_t)(i0 + t) * ldx + k];
        }
    }
    if (s * mr < n) codi__pack_a(a, x + (size_t)s * mr * ldx, ldx, n - s * mr, k0, kb, mr);
}
/* y += a * x */
CODI__AVX2 static void codi__axpy_avx2(float *y, float a, const float *x, int n) {
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}
/* The horizontal sums of v[0..7] as one vector, lane 4m + r = the sum of v[2r + m], each added in
   codi__hsum_avx2's order (lanes i + (i + 4), then + (i + 2), then + (i + 1)). */
CODI__AVX2 static __m256 codi__hsum8_avx2(const __m256 *v) {
    __m256 c[4], d[2];
    int k;
    for (k = 0; k < 4; k++)
        c[k] = _mm256_add_ps(_mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x20), _mm256_permute2f128_ps(v[2 * k], v[2 * k + 1], 0x31));
    for (k = 0; k < 2; k++)
        d[k] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(c[2 * k]), _mm256_castps_pd(c[2 * k + 1]))),
                             _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(c[2 * k]), _mm256_castps_pd(c[2 * k + 1]))));
    return _mm256_add_ps(_mm256_shuffle_ps(d[0], d[1], 0x88), _mm256_shuffle_ps(d[0], d[1], 0xDD));
}
/* codi__softmax_weights with the max and the division 8 lanes at a time (the same results: expf
   and the sum stay in order). */
CODI__AVX2 static void codi__softmax_weights_avx2(float *sc, int nq, int T) {
    int h, t;
    for (h = 0; h < nq; h++) {
        float *a = sc + (size_t)h * T, mx = -FLT_MAX, sum = 0, lanes[8];
        __m256 m = _mm256_set1_ps(-FLT_MAX), d;
        for (t = 0; t + 8 <= T; t += 8) m = _mm256_max_ps(_mm256_loadu_ps(a + t), m);    /* a NaN lane keeps m, as a[t] > mx */
        _mm256_storeu_ps(lanes, m);
        for (; t < T; t++) if (a[t] > mx) mx = a[t];
        for (t = 0; t < 8; t++) if (lanes[t] > mx) mx = lanes[t];
        for (t = 0; t < T; t++) { a[t] = expf(a[t] - mx); sum += a[t]; }
        d = _mm256_set1_ps(sum);
        for (t = 0; t + 8 <= T; t += 8) _mm256_storeu_ps(a + t, _mm256_div_ps(_mm256_loadu_ps(a + t), d));
        for (; t < T; t++) a[t] /= sum;
    }
}
/* codi__attend_dot_axpy in blocks: scores in tiles of 2 heads x 4 positions (8 dot products summed
   horizontally together), then the weighted values in tiles of 4 heads x 16 columns (each V row
   read once per tile). The sums are codi__dot_avx2's and codi__axpy_avx2's, in their order: the
   results equal the per-position calls bit for bit. */
CODI__AVX2 static void codi__attend_avx2(float *out, const float *q, int nq, const float *keys, const float *vals, int T, int HD, float *sc) {
    float scale = 1.0f / sqrtf((float)HD), tmp[8];
    int h0, t0, h, t, j;
    if (HD % 8) { codi__attend_dot_axpy(codi__dot_avx2, codi__axpy_avx2, out, q, nq, keys, vals, T, HD, sc); return; }
    for (h0 = 0; h0 < nq; h0 += 2)
        for (t0 = 0; t0 < T; t0 += 4) {       /* past nq or T: the last head or position again, not stored */
            __m256 v[8];
            for (t = 0; t < 4; t++)
                for (h = 0; h < 2; h++)
                    v[2 * t + h] = codi__dotv_avx2(q + (size_t)(h0 + h < nq ? h0 + h : nq - 1) * HD, keys + (size_t)(t0 + t < T ? t0 + t : T - 1) * HD, HD);
            _mm256_storeu_ps(tmp, _mm256_mul_ps(codi__hsum8_avx2(v), _mm256_set1_ps(scale)));
            for (h = 0; h < 2 && h0 + h < nq; h++)
                for (t = 0; t < 4 && t0 + t < T; t++) sc[(size_t)(h0 + h) * T + t0 + t] = tmp[4 * h + t];
        }
    codi__softmax_weights_avx2(sc, nq, T);
    for (h0 = 0; h0 < nq; h0 += 4) {
        const float *w[4];
        for (h = 0; h < 4; h++) w[h] = sc + (size_t)(h0 + h < nq ? h0 + h : nq - 1) * T;
        for (j = 0; j < HD; j += 16) {
            int two = j + 16 <= HD;           /* else the last 8 columns (the second vector: them again, not stored) */
            const float *vt = vals + j;
            size_t o1 = two ? 8 : 0;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (t = 0; t < T; t++, vt += HD) {
                __m256 x0 = _mm256_loadu_ps(vt), x1 = _mm256_loadu_ps(vt + o1), wh;
#define CODI__ACC(h) wh = _mm256_broadcast_ss(w[h] + t); a##h##0 = _mm256_fmadd_ps(wh, x0, a##h##0); a##h##1 = _mm256_fmadd_ps(wh, x1, a##h##1)
                CODI__ACC(0); CODI__ACC(1); CODI__ACC(2); CODI__ACC(3);
#undef CODI__ACC
            }
            {
                __m256 acc[8];
                acc[0] = a00; acc[1] = a01; acc[2] = a10; acc[3] = a11; acc[4] = a20; acc[5] = a21; acc[6] = a30; acc[7] = a31;
                for (h = 0; h < 4 && h0 + h < nq; h++) {
                    _mm256_storeu_ps(out + (size_t)(h0 + h) * HD + j, acc[2 * h]);
                    if (two) _mm256_storeu_ps(out + (size_t)(h0 + h) * HD + j + 8, acc[2 * h + 1]);
                }
            }
        }
    }
}

/* 16 bf16 widened to f32, a bf16 being the top half of an f32. (The maskz forms: the plain ones
   start from _mm512_undefined, which g++ warns about.) */
CODI__AVX512 static __m512 codi__widen_bf16x16_avx512(__m256i h) {
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, h), 16));
}
CODI__AVX512 static __m512 codi__bf16x16_avx512(const uint16_t *p) {
    return codi__widen_bf16x16_avx512(_mm256_loadu_si256((const __m256i *)(const void *)p));
}
CODI__AVX512 static float codi__hsum_avx512(__m512 v) {
    __m256 lo = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, _mm512_castps_pd(v), 0));
    __m256 hi = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xff, _mm512_castps_pd(v), 1));
    return codi__hsum_avx2(_mm256_add_ps(lo, hi));
}
/* a . b over the first n - n % 16 columns, before the horizontal sum (four accumulators). */
CODI__AVX512 static CODI__INLINE __m512 codi__dotv_avx512(const float *a, const float *b, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    return _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3));
}
CODI__AVX512 static float codi__dot_avx512(const float *a, const float *b, int n) {
    float s = codi__hsum_avx512(codi__dotv_avx512(a, b, n));
    int i;
    for (i = n - n % 16; i < n; i++) s += a[i] * b[i];
    return s;
}
/* The horizontal sums of v[0..15] as one vector, lane 4m + r = the sum of v[4r + m], each added in
   codi__hsum_avx512's order (lanes i + (i + 8), + (i + 4), + (i + 2), + (i + 1)). */
CODI__AVX512 static __m512 codi__hsum16_avx512(const __m512 *v) {
    __m512 c[8], d[4], e[2];
    int k;
    for (k = 0; k < 8; k++)
        c[k] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xffff, v[2 * k], v[2 * k + 1], 0x44), _mm512_maskz_shuffle_f32x4(0xffff, v[2 * k], v[2 * k + 1], 0xEE));
    for (k = 0; k < 4; k++)
        d[k] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(0xffff, c[2 * k], c[2 * k + 1], 0x88), _mm512_maskz_shuffle_f32x4(0xffff, c[2 * k], c[2 * k + 1], 0xDD));
    for (k = 0; k < 2; k++)
        e[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xff, _mm512_castps_pd(d[2 * k]), _mm512_castps_pd(d[2 * k + 1]))),
                             _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xff, _mm512_castps_pd(d[2 * k]), _mm512_castps_pd(d[2 * k + 1]))));
    return _mm512_add_ps(_mm512_shuffle_ps(e[0], e[1], 0x88), _mm512_shuffle_ps(e[0], e[1], 0xDD));
}
/* codi__softmax_weights_avx2 16 lanes at a time. */
CODI__AVX512 static void codi__softmax_weights_avx512(float *sc, int nq, int T) {
    int h, t;
    for (h = 0; h < nq; h++) {
        float *a = sc + (size_t)h * T, mx = -FLT_MAX, sum = 0, lanes[16];
        __m512 m = _mm512_set1_ps(-FLT_MAX), d;
        for (t = 0; t + 16 <= T; t += 16) m = _mm512_maskz_max_ps(0xffff, _mm512_loadu_ps(a + t), m);    /* a NaN lane keeps m, as a[t] > mx */
        _mm512_storeu_ps(lanes, m);
        for (; t < T; t++) if (a[t] > mx) mx = a[t];
        for (t = 0; t < 16; t++) if (lanes[t] > mx) mx = lanes[t];
        for (t = 0; t < T; t++) { a[t] = expf(a[t] - mx); sum += a[t]; }
        d = _mm512_set1_ps(sum);
        for (t = 0; t + 16 <= T; t += 16) _mm512_storeu_ps(a + t, _mm512_div_ps(_mm512_loadu_ps(a + t), d));
        for (; t < T; t++) a[t] /= sum;
    }
}
/* codi__attend_dot_axpy in blocks: scores in tiles of 4 heads x 4 positions (16 dot products
   summed horizontally together), then the weighted values in tiles of 4 heads x 64 columns (each
   V row read once per tile). The sums are codi__dot_avx512's and codi__axpy_avx2's, in their
   order: the results equal the per-position calls bit for bit. */
CODI__AVX512 static void codi__attend_avx512(float *out, const float *q, int nq, const float *keys, const float *vals, int T, int HD, float *sc) {
    float scale = 1.0f / sqrtf((float)HD), tmp[16];
    int h0, t0, h, t, j, k;
    if (HD % 16) { codi__attend_dot_axpy(codi__dot_avx512, codi__axpy_avx2, out, q, nq, keys, vals, T, HD, sc); return; }
    for (h0 = 0; h0 < nq; h0 += 4)
        for (t0 = 0; t0 < T; t0 += 4) {       /* past nq or T: the last head or position again, not stored */
            __m512 v[16];
            for (t = 0; t < 4; t++)
                for (h = 0; h < 4; h++)
                    v[4 * t + h] = codi__dotv_avx512(q + (size_t)(h0 + h < nq ? h0 + h : nq - 1) * HD, keys + (size_t)(t0 + t < T ? t0 + t : T - 1) * HD, HD);
            _mm512_storeu_ps(tmp, _mm512_mul_ps(codi__hsum16_avx512(v), _mm512_set1_ps(scale)));
            for (h = 0; h < 4 && h0 + h < nq; h++)
                for (t = 0; t < 4 && t0 + t < T; t++) sc[(size_t)(h0 + h) * T + t0 + t] = tmp[4 * h + t];
        }
    codi__softmax_weights_avx512(sc, nq, T);
    for (h0 = 0; h0 < nq; h0 += 4) {
        const float *w[4];
        for (h = 0; h < 4; h++) w[h] = sc + (size_t)(h0 + h < nq ? h0 + h : nq - 1) * T;
        for (j = 0; j < HD; j += 64) {
            int nv = HD - j < 64 ? (HD - j) / 16 : 4;     /* vectors of 16 columns in this tile (past nv: column 0 again, not stored) */
            const float *vt = vals + j;
            size_t o1 = 16 * (nv > 1), o2 = 16 * (nv > 2 ? 2 : 0), o3 = 16 * (nv > 3 ? 3 : 0);
            __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (t = 0; t < T; t++, vt += HD) {
                __m512 x0 = _mm512_loadu_ps(vt), x1 = _mm512_loadu_ps(vt + o1), x2 = _mm512_loadu_ps(vt + o2), x3 = _mm512_loadu_ps(vt + o3), wh;
#define CODI__ACC(h) wh = _mm512_set1_ps(w[h][t]); a##h##0 = _mm512_fmadd_ps(wh, x0, a##h##0); a##h##1 = _mm512_fmadd_ps(wh, x1, a##h##1); \
        a##h##2 = _mm512_fmadd_ps(wh, x2, a##h##2); a##h##3 = _mm512_fmadd_ps(wh, x3, a##h##3)
                CODI__ACC(0); CODI__ACC(1); CODI__ACC(2); CODI__ACC(3);
#undef CODI__ACC
            }
            {
                __m512 acc[16];
                acc[0] = a00; acc[1] = a01; acc[2] = a02; acc[3] = a03; acc[4] = a10; acc[5] = a11; acc[6] = a12; acc[7] = a13;
                acc[8] = a20; acc[9] = a21; acc[10] = a22; acc[11] = a23; acc[12] = a30; acc[13] = a31; acc[14] = a32; acc[15] = a33;
                for (h = 0; h < 4 && h0 + h < nq; h++)
                    for (k = 0; k < nv; k++) _mm512_storeu_ps(out + (size_t)(h0 + h) * HD + j + 16 * k, acc[4 * h + k]);
            }
        }
    }
}
/* Rows of more than GEMV_ROW_MAX columns (x leaves L1 if read once per row): 4 rows per pass, 32 columns per step, two accumulators per row; prefetch 1 KB ahead. */
CODI__AVX512 static void codi__gemv4_avx512(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    int K = w->cols, r, j, k;
    (void)xh;
    for (r = r0; r < r1; r += 4) {
        const void *p[4];
        __m512 acc[8];
        float s[4];
        codi__rows4(p, w, r, r1);
        for (k = 0; k < 8; k++) acc[k] = _mm512_setzero_ps();
        j = 0;
        if (w->dtype == CODI_BF16) {
            const uint16_t *w0 = (const uint16_t *)p[0], *w1 = (const uint16_t *)p[1], *w2 = (const uint16_t *)p[2], *w3 = (const uint16_t *)p[3];
            for (; j + 32 <= K; j += 32) {
                __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
                _mm_prefetch((const char *)(w0 + j) + 1024, _MM_HINT_T0); _mm_prefetch((const char *)(w1 + j) + 1024, _MM_HINT_T0);
                _mm_prefetch((const char *)(w2 + j) + 1024, _MM_HINT_T0); _mm_prefetch((const char *)(w3 + j) + 1024, _MM_HINT_T0);
                acc[0] = _mm512_fmadd_ps(codi__bf16x16_avx512(w0 + j), x0, acc[0]); acc[1] = _mm512_fmadd_ps(codi__bf16x16_avx512(w0 + j + 16), x1, acc[1]);
                acc[2] = _mm512_fmadd_ps(codi__bf16x16_avx512(w1 + j), x0, acc[2]); acc[3] = _mm512_fmadd_ps(codi__bf16x16_avx512(w1 + j + 16), x1, acc[3]);
                acc[4] = _mm512_fmadd_ps(codi__bf16x16_avx512(w2 + j), x0, acc[4]); acc[5] = _mm512_fmadd_ps(codi__bf16x16_avx512(w2 + j + 16), x1, acc[5]);
                acc[6] = _mm512_fmadd_ps(codi__bf16x16_avx512(w3 + j), x0, acc[6]); acc[7] = _mm512_fmadd_ps(codi__bf16x16_avx512(w3 + j + 16), x1, acc[7]);
            }
            for (k = 0; k < 4; k++) {
                int t;
                s[k] = codi__hsum_avx512(_mm512_add_ps(acc[2 * k], acc[2 * k + 1]));
                for (t = j; t < K; t++) s[k] += x[t] * codi__bf16_to_f32(((const uint16_t *)p[k])[t]);
            }
        } else {
            const float *w0 = (const float *)p[0], *w1 = (const float *)p[1], *w2 = (const float *)p[2], *w3 = (const float *)p[3];
            for (; j + 32 <= K; j += 32) {
                __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
                acc[0] = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), x0, acc[0]); acc[1] = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j + 16), x1, acc[1]);
                acc[2] = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j), x0, acc[2]); acc[3] = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j + 16), x1, acc[3]);
                acc[4] = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j), x0, acc[4]); acc[5] = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j + 16), x1, acc[5]);
                acc[6] = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j), x0, acc[6]); acc[7] = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j + 16), x1, acc[7]);
            }
            for (k = 0; k < 4; k++) {
                int t;
                s[k] = codi__hsum_avx512(_mm512_add_ps(acc[2 * k], acc[2 * k + 1]));
                for (t = j; t < K; t++) s[k] += x[t] * ((const float *)p[k])[t];
            }
        }
        for (k = 0; k < 4 && r + k < r1; k++) out[r + k - r0] = s[k];
    }
}
/* Rows up to GEMV_ROW_MAX columns one at a time, 64 columns (two cache lines of bf16) per step,
   four accumulators: each thread's rows are then one sequential stream, which the hardware
   prefetcher follows (4 rows interleaved with software prefetches streamed ~35% slower at 2048
   columns; tools/bench_gemv.c); x stays in L1. A 64-byte load
   holds 32 bf16: shifted left 16 it is the even ones as f32, masked the odd ones, each multiplied
   by the matching x (deinterleaved by a permute; the maskz shift, as in codi__widen_bf16x16_avx512). */
CODI__AVX512 static void codi__gemv_avx512(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    int K = w->cols, r, j;
    if (K > CODI__GEMV_ROW_MAX) { codi__gemv4_avx512(out, x, xh, w, r0, r1); return; }
    for (r = r0; r < r1; r++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        float s;
        if (w->dtype == CODI_BF16) {
            const uint16_t *p = (const uint16_t *)w->data + (size_t)r * K;
            for (j = 0; j + 64 <= K; j += 64) {
                __m512i v0 = _mm512_loadu_si512((const void *)(p + j)), v1 = _mm512_loadu_si512((const void *)(p + j + 32));
                __m512 x0 = _mm512_loadu_ps(x + j), x1 = _mm512_loadu_ps(x + j + 16);
                __m512 x2 = _mm512_loadu_ps(x + j + 32), x3 = _mm512_loadu_ps(x + j + 48);
                a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, v0, 16)), _mm512_permutex2var_ps(x0, even, x1), a0);
                a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v0, top)), _mm512_permutex2var_ps(x0, odd, x1), a1);
                a2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, v1, 16)), _mm512_permutex2var_ps(x2, even, x3), a2);
                a3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v1, top)), _mm512_permutex2var_ps(x2, odd, x3), a3);
            }
            for (; j + 16 <= K; j += 16) a0 = _mm512_fmadd_ps(codi__bf16x16_avx512(p + j), _mm512_loadu_ps(x + j), a0);
            s = codi__hsum_avx512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
            for (; j < K; j++) s += x[j] * codi__bf16_to_f32(p[j]);
        } else s = codi__dot_avx512(x, (const float *)w->data + (size_t)r * K, K);
        out[r - r0] = s;
    }
}
/* 8 positions x 32 rows: 16 accumulators; a [kb][8], b [kb][32] */
CODI__AVX512 static void codi__micro_avx512(int kb, const void *av, const void *bv, float *c, size_t ldc, int add) {
    const float *a = (const float *)av, *b = (const float *)bv;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    int k;
    for (k = 0; k < kb; k++, a += 8, b += 32) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), t;
        t = _mm512_set1_ps(a[0]); c00 = _mm512_fmadd_ps(t, b0, c00); c01 = _mm512_fmadd_ps(t, b1, c01);
        t = _mm512_set1_ps(a[1]); c10 = _mm512_fmadd_ps(t, b0, c10); c11 = _mm512_fmadd_ps(t, b1, c11);
        t = _mm512_set1_ps(a[2]); c20 = _mm512_fmadd_ps(t, b0, c20); c21 = _mm512_fmadd_ps(t, b1, c21);
        t = _mm512_set1_ps(a[3]); c30 = _mm512_fmadd_ps(t, b0, c30); c31 = _mm512_fmadd_ps(t, b1, c31);
        t = _mm512_set1_ps(a[4]); c40 = _mm512_fmadd_ps(t, b0, c40); c41 = _mm512_fmadd_ps(t, b1, c41);
        t = _mm512_set1_ps(a[5]); c50 = _mm512_fmadd_ps(t, b0, c50); c51 = _mm512_fmadd_ps(t, b1, c51);
        t = _mm512_set1_ps(a[6]); c60 = _mm512_fmadd_ps(t, b0, c60); c61 = _mm512_fmadd_ps(t, b1, c61);
        t = _mm512_set1_ps(a[7]); c70 = _mm512_fmadd_ps(t, b0, c70); c71 = _mm512_fmadd_ps(t, b1, c71);
    }
#define CODI__ST(row, lo, hi) do { float *cr = c + (size_t)(row) * ldc; \
        if (add) { lo = _mm512_add_ps(lo, _mm512_loadu_ps(cr)); hi = _mm512_add_ps(hi, _mm512_loadu_ps(cr + 16)); } \
        _mm512_storeu_ps(cr, lo); _mm512_storeu_ps(cr + 16, hi); } while (0)
    CODI__ST(0, c00, c01); CODI__ST(1, c10, c11); CODI__ST(2, c20, c21); CODI__ST(3, c30, c31);
    CODI__ST(4, c40, c41); CODI__ST(5, c50, c51); CODI__ST(6, c60, c61); CODI__ST(7, c70, c71);
#undef CODI__ST
}

/* 12 positions x 32 rows: 24 accumulators; a [kb][12], b [kb][32] */
CODI__AVX512 static void codi__micro12_avx512(int kb, const void *av, const void *bv, float *c, size_t ldc, int add) {
    const float *a = (const float *)av, *b = (const float *)bv;
    __m512 acc[24];
    int k, i;
    for (i = 0; i < 24; i++) acc[i] = _mm512_setzero_ps();
    for (i = 0; add && i < 12; i++) { _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0); _mm_prefetch((const char *)(c + (size_t)i * ldc + 31), _MM_HINT_T0); }
    for (k = 0; k < kb; k++, a += 12, b += 32) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), t;
#define CODI__ROW(i) t = _mm512_set1_ps(a[i]); acc[2 * (i)] = _mm512_fmadd_ps(t, b0, acc[2 * (i)]); acc[2 * (i) + 1] = _mm512_fmadd_ps(t, b1, acc[2 * (i) + 1])
        CODI__ROW(0); CODI__ROW(1); CODI__ROW(2); CODI__ROW(3); CODI__ROW(4); CODI__ROW(5);
        CODI__ROW(6); CODI__ROW(7); CODI__ROW(8); CODI__ROW(9); CODI__ROW(10); CODI__ROW(11);
#undef CODI__ROW
    }
    for (i = 0; i < 12; i++) {
        float *cr = c + (size_t)i * ldc;
        if (add) { acc[2 * i] = _mm512_add_ps(acc[2 * i], _mm512_loadu_ps(cr)); acc[2 * i + 1] = _mm512_add_ps(acc[2 * i + 1], _mm512_loadu_ps(cr + 16)); }
        _mm512_storeu_ps(cr, acc[2 * i]); _mm512_storeu_ps(cr + 16, acc[2 * i + 1]);
    }
}
/* As codi__pack_b_avx2 for bf16 weights, 16 rows x 32 columns per step: the rows' 16 pairs each
   transposed as a 16 x 16 block of 32-bit lanes (4 shuffle stages), then split into f32. */
CODI__AVX512 static void codi__pack_b_avx512(float *b, const codi_matrix *w, int r0, int nrows, int k0, int kb, int nr) {
    const uint16_t *src = (const uint16_t *)w->data;
    size_t K = (size_t)w->cols;
    __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    int j, k, t, m;
    if (w->dtype != CODI_BF16 || nrows < nr || nr % 16) { codi__pack_b_avx2(b, w, r0, nrows, k0, kb, nr); return; }
    for (j = 0; j < nr; j += 16) {
        for (k = 0; k + 32 <= kb; k += 32) {
            __m512i r[16], u[16];
            for (t = 0; t < 16; t++) r[t] = _mm512_loadu_si512((const void *)(src + (size_t)(r0 + j + t) * K + k0 + k));
            for (t = 0; t < 16; t += 2) {       /* within 128-bit lanes: rows t, t + 1 interleaved */
                u[t] = _mm512_maskz_unpacklo_epi32(0xffff, r[t], r[t + 1]); u[t + 1] = _mm512_maskz_unpackhi_epi32(0xffff, r[t], r[t + 1]);
            }
            for (t = 0; t < 16; t += 4) {       /* r[t + m] lane L: rows t..t+3 of pair 4L + m */
                r[t] = _mm512_maskz_unpacklo_epi64(0xff, u[t], u[t + 2]); r[t + 1] = _mm512_maskz_unpackhi_epi64(0xff, u[t], u[t + 2]);
                r[t + 2] = _mm512_maskz_unpacklo_epi64(0xff, u[t + 1], u[t + 3]); r[t + 3] = _mm512_maskz_unpackhi_epi64(0xff, u[t + 1], u[t + 3]);
            }
            for (m = 0; m < 4; m++) {           /* gather lane L of r[m], r[4 + m], r[8 + m], r[12 + m] -> pair 4L + m */
                __m512i s0 = _mm512_maskz_shuffle_i32x4(0xffff, r[m], r[4 + m], 0x44), s1 = _mm512_maskz_shuffle_i32x4(0xffff, r[m], r[4 + m], 0xee);
                __m512i s2 = _mm512_maskz_shuffle_i32x4(0xffff, r[8 + m], r[12 + m], 0x44), s3 = _mm512_maskz_shuffle_i32x4(0xffff, r[8 + m], r[12 + m], 0xee);
                u[m] = _mm512_maskz_shuffle_i32x4(0xffff, s0, s2, 0x88); u[4 + m] = _mm512_maskz_shuffle_i32x4(0xffff, s0, s2, 0xdd);
                u[8 + m] = _mm512_maskz_shuffle_i32x4(0xffff, s1, s3, 0x88); u[12 + m] = _mm512_maskz_shuffle_i32x4(0xffff, s1, s3, 0xdd);
            }
            for (t = 0; t < 16; t++) {           /* u[t]: columns k + 2t, k + 2t + 1 of the 16 rows */
                _mm512_storeu_ps(b + (size_t)(k + 2 * t) * nr + j, _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, u[t], 16)));
                _mm512_storeu_ps(b + (size_t)(k + 2 * t + 1) * nr + j, _mm512_castsi512_ps(_mm512_and_si512(u[t], hi)));
            }
        }
        for (; k < kb; k++)
            for (t = 0; t < 16; t++) b[(size_t)k * nr + j + t] = codi__bf16_to_f32(src[(size_t)(r0 + j + t) * K + k0 + k]);
    }
}
/* As codi__pack_b_bf16 (b [ceil(kb/2)][nr] of bf16 pairs), 16 rows x 16 pairs per step: the
   transpose of codi__pack_b_avx512, stored as pairs. */
CODI__AVX512 static void codi__pack_b_bf16_avx512(uint32_t *b, const codi_matrix *w, int r0, int nrows, int k0, int kb, int nr) {
    const uint16_t *src = (const uint16_t *)w->data;
    size_t K = (size_t)w->cols;
    int j, k, t, m;
    if (nrows < nr || nr % 16) { codi__pack_b_bf16(b, w, r0, nrows, k0, kb, nr); return; }
    for (j = 0; j < nr; j += 16) {
        for (k = 0; k + 32 <= kb; k += 32) {
            __m512i r[16], u[16];
            for (t = 0; t < 16; t++) r[t] = _mm512_loadu_si512((const void *)(src + (size_t)(r0 + j + t) * K + k0 + k));
            for (t = 0; t < 16; t += 2) {
                u[t] = _mm512_maskz_unpacklo_epi32(0xffff, r[t], r[t + 1]); u[t + 1] = _mm512_maskz_unpackhi_epi32(0xffff, r[t], r[t + 1]);
            }
            for (t = 0; t < 16; t += 4) {
                r[t] = _mm512_maskz_unpacklo_epi64(0xff, u[t], u[t + 2]); r[t + 1] = _mm512_maskz_unpackhi_epi64(0xff, u[t], u[t + 2]);
                r[t + 2] = _mm512_maskz_unpacklo_epi64(0xff, u[t + 1], u[t + 3]); r[t + 3] = _mm512_maskz_unpackhi_epi64(0xff, u[t + 1], u[t + 3]);
            }
            for (m = 0; m < 4; m++) {
                __m512i s0 = _mm512_maskz_shuffle_i32x4(0xffff, r[m], r[4 + m], 0x44), s1 = _mm512_maskz_shuffle_i32x4(0xffff, r[m], r[4 + m], 0xee);
                __m512i s2 = _mm512_maskz_shuffle_i32x4(0xffff, r[8 + m], r[12 + m], 0x44), s3 = _mm512_maskz_shuffle_i32x4(0xffff, r[8 + m], r[12 + m], 0xee);
                u[m] = _mm512_maskz_shuffle_i32x4(0xffff, s0, s2, 0x88); u[4 + m] = _mm512_maskz_shuffle_i32x4(0xffff, s0, s2, 0xdd);
                u[8 + m] = _mm512_maskz_shuffle_i32x4(0xffff, s1, s3, 0x88); u[12 + m] = _mm512_maskz_shuffle_i32x4(0xffff, s1, s3, 0xdd);
            }
            for (t = 0; t < 16; t++) _mm512_storeu_si512((void *)(b + (size_t)(k / 2 + t) * nr + j), u[t]);   /* pair k/2 + t */
        }
        for (; k < kb; k += 2)
            for (t = 0; t < 16; t++) {
                const uint16_t *row = src + (size_t)(r0 + j + t) * K + k0;
                b[(size_t)(k / 2) * nr + j + t] = codi__bf16_pair(row[k], k + 1 < kb ? row[k + 1] : 0);
            }
    }
}

/* The multi-position GEMV tile (codi__gemvn_blocks): 3 rows x 8 positions, 24 accumulators;
   per 16 columns 3 widenings (2 instructions each) feed 24 FMAs (12 when np <= 4: half the cost
   for the last group of n = 8k + 1..4). */
CODI__AVX512 static void codi__tile_avx512(float *out, size_t ldo, const float *x, size_t ldx, int np, const void *const *w, int nrows,
                                           int dtype, int kb, const void *const *pf) {
    const float *xp[8];
    __m512 c[24], w0, w1, w2, xv;
    int j = 0, a, b, wide = np > 4;
    for (b = 0; b < 8; b++) xp[b] = x + (size_t)(b < np ? b : np - 1) * ldx;
    for (a = 0; a < 24; a++) c[a] = _mm512_setzero_ps();
#define CODI__FMA3(b) do { xv = _mm512_loadu_ps(xp[b] + j); c[b] = _mm512_fmadd_ps(w0, xv, c[b]); \
        c[8 + b] = _mm512_fmadd_ps(w1, xv, c[8 + b]); c[16 + b] = _mm512_fmadd_ps(w2, xv, c[16 + b]); } while (0)
#define CODI__STEP(W) do { w0 = W(w[0]); w1 = W(w[1]); w2 = W(w[2]); CODI__FMA3(0); CODI__FMA3(1); CODI__FMA3(2); CODI__FMA3(3); \
        if (wide) { CODI__FMA3(4); CODI__FMA3(5); CODI__FMA3(6); CODI__FMA3(7); } } while (0)
#define CODI__BF16(row) codi__bf16x16_avx512((const uint16_t *)(row) + j)
#define CODI__F32(row) _mm512_loadu_ps((const float *)(row) + j)
#define CODI__PF(bytes) do { if (pf) for (a = 0; a < 3; a++) _mm_prefetch((const char *)pf[a] + (bytes), _MM_HINT_T0); } while (0)
    if (dtype == CODI_BF16) {
        for (; j + 32 <= kb; j += 16) { CODI__PF(2 * j); CODI__STEP(CODI__BF16); j += 16; CODI__STEP(CODI__BF16); }
        if (j + 16 <= kb) { CODI__STEP(CODI__BF16); j += 16; }
    } else
        for (; j + 16 <= kb; j += 16) { CODI__PF(4 * j); CODI__STEP(CODI__F32); }
#undef CODI__PF
#undef CODI__F32
#undef CODI__BF16
#undef CODI__STEP
#undef CODI__FMA3
    for (a = 0; a < nrows; a++)
        for (b = 0; b < np; b++) {
            float s = codi__hsum_avx512(c[8 * a + b]);
            int t;
            for (t = j; t < kb; t++) s += xp[b][t] * codi_elem_f32(w[a], dtype, (size_t)t);
            out[(size_t)b * ldo + a] = s;
        }
}
CODI__AVX512 static void codi__gemvn_avx512(float *out, size_t ldo, const float *x, int n, const codi_matrix *w, int r0, int r1, float *work) {
    codi__gemvn_blocks(codi__tile_avx512, 8, out, ldo, x, n, w, r0, r1, work);
}
/* bf16 x bf16 -> f32 dot products (vdpbf16ps): each 32-bit lane adds a pair of products.
   x arrives as bf16 hi and lo parts (xh [2 cols]), both multiplied. Rows of more than
   GEMV_ROW_MAX columns: 4 rows per pass, 32 columns per step. */
CODI__AVX512BF16 static void codi__gemv4_avx512bf16(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    int K = w->cols, r, j, k;
    const uint16_t *xl = xh + K;
    (void)x;
    for (r = r0; r < r1; r += 4) {
        const void *p[4];
        const uint16_t *w0, *w1, *w2, *w3;
        __m512 acc[8];
        float s[4];
        codi__rows4(p, w, r, r1);
        w0 = (const uint16_t *)p[0]; w1 = (const uint16_t *)p[1]; w2 = (const uint16_t *)p[2]; w3 = (const uint16_t *)p[3];
        for (k = 0; k < 8; k++) acc[k] = _mm512_setzero_ps();
        for (j = 0; j + 32 <= K; j += 32) {
            __m512bh hi = (__m512bh)_mm512_loadu_si512((const void *)(xh + j)), lo = (__m512bh)_mm512_loadu_si512((const void *)(xl + j)), v;
            _mm_prefetch((const char *)(w0 + j) + 1024, _MM_HINT_T0); _mm_prefetch((const char *)(w1 + j) + 1024, _MM_HINT_T0);
            _mm_prefetch((const char *)(w2 + j) + 1024, _MM_HINT_T0); _mm_prefetch((const char *)(w3 + j) + 1024, _MM_HINT_T0);
            v = (__m512bh)_mm512_loadu_si512((const void *)(w0 + j)); acc[0] = _mm512_dpbf16_ps(acc[0], v, hi); acc[1] = _mm512_dpbf16_ps(acc[1], v, lo);
            v = (__m512bh)_mm512_loadu_si512((const void *)(w1 + j)); acc[2] = _mm512_dpbf16_ps(acc[2], v, hi); acc[3] = _mm512_dpbf16_ps(acc[3], v, lo);
            v = (__m512bh)_mm512_loadu_si512((const void *)(w2 + j)); acc[4] = _mm512_dpbf16_ps(acc[4], v, hi); acc[5] = _mm512_dpbf16_ps(acc[5], v, lo);
            v = (__m512bh)_mm512_loadu_si512((const void *)(w3 + j)); acc[6] = _mm512_dpbf16_ps(acc[6], v, hi); acc[7] = _mm512_dpbf16_ps(acc[7], v, lo);
        }
        for (k = 0; k < 4; k++) {
            int t;
            s[k] = codi__hsum_avx512(_mm512_add_ps(acc[2 * k], acc[2 * k + 1]));
            for (t = j; t < K; t++)
                s[k] += (codi__bf16_to_f32(xh[t]) + codi__bf16_to_f32(xl[t])) * codi__bf16_to_f32(((const uint16_t *)p[k])[t]);
        }
        for (k = 0; k < 4 && r + k < r1; k++) out[r + k - r0] = s[k];
    }
}
/* bf16 x bf16 -> f32 dot products (vdpbf16ps): each 32-bit lane adds a pair of products.
   x arrives as bf16 hi and lo parts (xh [2 cols]), both multiplied; rows up to GEMV_ROW_MAX
   columns one at a time (one sequential stream, as codi__gemv_avx512), 64 columns per step. */
CODI__AVX512BF16 static void codi__gemv_avx512bf16(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    int K = w->cols, r, j;
    const uint16_t *xl = xh + K;
    if (K > CODI__GEMV_ROW_MAX) { codi__gemv4_avx512bf16(out, x, xh, w, r0, r1); return; }
    for (r = r0; r < r1; r++) {
        const uint16_t *p = (const uint16_t *)w->data + (size_t)r * K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        float s;
        for (j = 0; j + 64 <= K; j += 64) {
            __m512bh v0 = (__m512bh)_mm512_loadu_si512((const void *)(p + j)), v1 = (__m512bh)_mm512_loadu_si512((const void *)(p + j + 32));
            a0 = _mm512_dpbf16_ps(a0, v0, (__m512bh)_mm512_loadu_si512((const void *)(xh + j)));
            a1 = _mm512_dpbf16_ps(a1, v0, (__m512bh)_mm512_loadu_si512((const void *)(xl + j)));
            a2 = _mm512_dpbf16_ps(a2, v1, (__m512bh)_mm512_loadu_si512((const void *)(xh + j + 32)));
            a3 = _mm512_dpbf16_ps(a3, v1, (__m512bh)_mm512_loadu_si512((const void *)(xl + j + 32)));
        }
        s = codi__hsum_avx512(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        for (; j < K; j++) s += (codi__bf16_to_f32(xh[j]) + codi__bf16_to_f32(xl[j])) * codi__bf16_to_f32(p[j]);
        out[r - r0] = s;
    }
}
/* 8 positions x 32 rows on bf16 pairs: a [kb/2][hi, lo][8], b [kb/2][32], each element two bf16;
   each weight pair meets the hi and the lo part of the activations. */
CODI__AVX512BF16 static void codi__micro_avx512bf16(int kb, const void *av, const void *bv, float *c, size_t ldc, int add) {
    const uint32_t *a = (const uint32_t *)av, *b = (const uint32_t *)bv;
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    int k, kp = (kb + 1) / 2;
    for (k = 0; k < kp; k++, a += 16, b += 32) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b), b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + 16)), t;
#define CODI__DP2(i, lo, hi) do { t = (__m512bh)_mm512_set1_epi32((int)a[i]); lo = _mm512_dpbf16_ps(lo, t, b0); hi = _mm512_dpbf16_ps(hi, t, b1); \
        t = (__m512bh)_mm512_set1_epi32((int)a[8 + i]); lo = _mm512_dpbf16_ps(lo, t, b0); hi = _mm512_dpbf16_ps(hi, t, b1); } while (0)
        CODI__DP2(0, c00, c01); CODI__DP2(1, c10, c11); CODI__DP2(2, c20, c21); CODI__DP2(3, c30, c31);
        CODI__DP2(4, c40, c41); CODI__DP2(5, c50, c51); CODI__DP2(6, c60, c61); CODI__DP2(7, c70, c71);
#undef CODI__DP2
    }
#define CODI__ST(row, lo, hi) do { float *cr = c + (size_t)(row) * ldc; \
        if (add) { lo = _mm512_add_ps(lo, _mm512_loadu_ps(cr)); hi = _mm512_add_ps(hi, _mm512_loadu_ps(cr + 16)); } \
        _mm512_storeu_ps(cr, lo); _mm512_storeu_ps(cr + 16, hi); } while (0)
    CODI__ST(0, c00, c01); CODI__ST(1, c10, c11); CODI__ST(2, c20, c21); CODI__ST(3, c30, c31);
    CODI__ST(4, c40, c41); CODI__ST(5, c50, c51); CODI__ST(6, c60, c61); CODI__ST(7, c70, c71);
#undef CODI__ST
}

/* The bf16 compute mode (codi_load_opts.compute = CODI_COMPUTE_BF16): x rounded to bf16 (its hi
   part alone), one vdpbf16ps per pair of weights, f32 sums. GEMM tile: 12 positions x 32 rows,
   a [kb/2][12], b [kb/2][32] of bf16 pairs. */
CODI__AVX512BF16 static void codi__micro12_bf16_avx512(int kb, const void *av, const void *bv, float *c, size_t ldc, int add) {
    const uint32_t *a = (const uint32_t *)av, *b = (const uint32_t *)bv;
    __m512 acc[24];
    int k, i, kp = (kb + 1) / 2;
    for (i = 0; i < 24; i++) acc[i] = _mm512_setzero_ps();
    for (i = 0; add && i < 12; i++) { _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0); _mm_prefetch((const char *)(c + (size_t)i * ldc + 31), _MM_HINT_T0); }
    for (k = 0; k < kp; k++, a += 12, b += 32) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512((const void *)b), b1 = (__m512bh)_mm512_loadu_si512((const void *)(b + 16)), t;
#define CODI__ROW(i) t = (__m512bh)_mm512_set1_epi32((int)a[i]); acc[2 * (i)] = _mm512_dpbf16_ps(acc[2 * (i)], t, b0); \
        acc[2 * (i) + 1] = _mm512_dpbf16_ps(acc[2 * (i) + 1], t, b1)
        CODI__ROW(0); CODI__ROW(1); CODI__ROW(2); CODI__ROW(3); CODI__ROW(4); CODI__ROW(5);
        CODI__ROW(6); CODI__ROW(7); CODI__ROW(8); CODI__ROW(9); CODI__ROW(10); CODI__ROW(11);
#undef CODI__ROW
    }
    for (i = 0; i < 12; i++) {
        float *cr = c + (size_t)i * ldc;
        if (add) { acc[2 * i] = _mm512_add_ps(acc[2 * i], _mm512_loadu_ps(cr)); acc[2 * i + 1] = _mm512_add_ps(acc[2 * i + 1], _mm512_loadu_ps(cr + 16)); }
        _mm512_storeu_ps(cr, acc[2 * i]); _mm512_storeu_ps(cr + 16, acc[2 * i + 1]);
    }
}
/* Its multi-position GEMV tile: 3 bf16 rows x 8 positions of bf16 x (row stride ldx), 24
   accumulators, one vdpbf16ps per 32 columns of a row and a position (no widening). */
CODI__AVX512BF16 static void codi__tile_bf16_avx512(float *out, size_t ldo, const uint16_t *x, size_t ldx, int np, const uint16_t *const *w,
                                                    int nrows, int kb, const uint16_t *const *pf) {
    const uint16_t *xp[8];
    __m512 c[24];
    __m512bh w0, w1, w2, xv;
    int j = 0, a, b, wide = np > 4;
    for (b = 0; b < 8; b++) xp[b] = x + (size_t)(b < np ? b : np - 1) * ldx;
    for (a = 0; a < 24; a++) c[a] = _mm512_setzero_ps();
#define CODI__DP3(b) do { xv = (__m512bh)_mm512_loadu_si512((const void *)(xp[b] + j)); c[b] = _mm512_dpbf16_ps(c[b], w0, xv); \
        c[8 + b] = _mm512_dpbf16_ps(c[8 + b], w1, xv); c[16 + b] = _mm512_dpbf16_ps(c[16 + b], w2, xv); } while (0)
    for (; j + 32 <= kb; j += 32) {
        if (pf) for (a = 0; a < 3; a++) _mm_prefetch((const char *)(pf[a] + j), _MM_HINT_T0);
        w0 = (__m512bh)_mm512_loadu_si512((const void *)(w[0] + j)); w1 = (__m512bh)_mm512_loadu_si512((const void *)(w[1] + j));
        w2 = (__m512bh)_mm512_loadu_si512((const void *)(w[2] + j));
        CODI__DP3(0); CODI__DP3(1); CODI__DP3(2); CODI__DP3(3);
        if (wide) { CODI__DP3(4); CODI__DP3(5); CODI__DP3(6); CODI__DP3(7); }
    }
#undef CODI__DP3
    for (a = 0; a < nrows; a++)
        for (b = 0; b < np; b++) {
            float s = codi__hsum_avx512(c[8 * a + b]);
            int t;
            for (t = j; t < kb; t++) s += codi__bf16_to_f32(xp[b][t]) * codi__bf16_to_f32(w[a][t]);
            out[(size_t)b * ldo + a] = s;
        }
}
/* Its multi-position GEMV (2..GEMM_MIN-1 positions; f32 weights: codi__gemvn_avx512): x rounded
   to bf16 once into work (rows 64-byte aligned, off 4 KiB multiples), then codi__gemvn_blocks'
   order of tiles with the next rows prefetched. */
CODI__AVX512BF16 static void codi__gemvn_bf16_avx512(float *out, size_t ldo, const float *x, int n, const codi_matrix *w, int r0, int r1, float *work) {
    size_t K = (size_t)w->cols, ldx = (K + 31) / 32 * 32 + 32, k;
    uint16_t *xs = (uint16_t *)(void *)(((uintptr_t)work + 63) & ~(uintptr_t)63);   /* [n, ldx] */
    int r, i0, a, i;
    if (w->dtype != CODI_BF16) { codi__gemvn_avx512(out, ldo, x, n, w, r0, r1, work); return; }
    for (i = 0; i < n; i++)
        for (k = 0; k < K; k++) xs[(size_t)i * ldx + k] = codi__f32_to_bf16(x[(size_t)i * K + k]);
    for (r = r0; r < r1; r += CODI__GEMVN_R) {
        const uint16_t *rows[CODI__GEMVN_R], *next[CODI__GEMVN_R];
        for (a = 0; a < CODI__GEMVN_R; a++) {
            rows[a] = (const uint16_t *)w->data + (size_t)(r + a < r1 ? r + a : r1 - 1) * K;
            next[a] = (const uint16_t *)w->data + (size_t)(r + CODI__GEMVN_R + a < r1 ? r + CODI__GEMVN_R + a : r1 - 1) * K;
        }
        for (i0 = 0; i0 < n; i0 += 8)
            codi__tile_bf16_avx512(out + (size_t)i0 * ldo + (r - r0), ldo, xs + (size_t)i0 * ldx, ldx, n - i0 < 8 ? n - i0 : 8, rows,
                                   r1 - r < CODI__GEMVN_R ? r1 - r : CODI__GEMVN_R, (int)K, i0 == 0 ? next : NULL);
    }
}
#endif /* CODI__X86 */

#define CODI__AMX_MIN 9    /* fewer positions: the multi-position GEMV (its 8-position tile is faster up to 8, measured) */
#ifdef CODI__AMX
/* AMX (tile registers; TDPBF16PS: C[16 x 16 f32] += A[16 x 32 bf16] . B[16 column pairs x 16 x 2 bf16]):
   the products of AMX_MIN+ positions as C^T = W . X^T. A tiles are the bf16 weights (exact); x is
   split into hi = bf16(x) and lo = bf16(x - hi) (|x - hi - lo| <= 2^-16 |x|), packed as B tiles
   once per block, and both are multiplied: C^T += W . hi^T + W . lo^T in f32. Per block of up to
   AMX_MC positions, rows in blocks whose C^T stays in the work (and L2) across column blocks of
   kc: the packed x of a column block fits AMX_XB (L2), each 32-position strip's part L1. With one
   strip (up to 32 positions: batched decode) each weight is used once and is read in place, kc
   long runs of each row; with more, the block's weights are first copied into contiguous tiles
   (rows 2^n elements apart share cache sets, so in place they would not stay in cache between
   strips). C^T is transposed into out after the last column block. */
#define CODI__AMX_MC 256                           /* positions per block */
#define CODI__AMX_XB ((size_t)256 * 1024)          /* bytes of packed x per block (sets kc) */
#define CODI__AMX_WB ((size_t)256 * 1024)          /* bytes of packed weights per block */
#define CODI__AMX_CB ((size_t)512 * 1024)          /* bytes of C^T per block (sets the rows per block) */
#define CODI__AMX_WORK ((CODI__AMX_XB + CODI__AMX_WB + CODI__AMX_CB) / 4)   /* floats of work */
#define CODI__MEMBAR() __asm__ __volatile__("" ::: "memory")   /* tile loads are asm that the compiler does not see read memory */
typedef struct { uint8_t palette, start_row, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } codi__tilecfg;

/* 16 x 16 32-bit words transposed in registers (maskz forms: see codi__bf16x16_avx512). */
CODI__AMX static void codi__transpose16_amx(__m512i v[16]) {
    __m512i t[16], u[16];
    int i, j;
    for (i = 0; i < 16; i += 2) { t[i] = _mm512_maskz_unpacklo_epi32(0xffff, v[i], v[i + 1]); t[i + 1] = _mm512_maskz_unpackhi_epi32(0xffff, v[i], v[i + 1]); }
    for (i = 0; i < 16; i += 4) {        /* u[i + j], 128-bit lane q: word 4q + j of rows i..i+3 */
        u[i] = _mm512_maskz_unpacklo_epi64(0xff, t[i], t[i + 2]); u[i + 1] = _mm512_maskz_unpackhi_epi64(0xff, t[i], t[i + 2]);
        u[i + 2] = _mm512_maskz_unpacklo_epi64(0xff, t[i + 1], t[i + 3]); u[i + 3] = _mm512_maskz_unpackhi_epi64(0xff, t[i + 1], t[i + 3]);
    }
    for (j = 0; j < 4; j++) {
        __m512i x0 = _mm512_maskz_shuffle_i32x4(0xffff, u[j], u[4 + j], 0x88), x1 = _mm512_maskz_shuffle_i32x4(0xffff, u[j], u[4 + j], 0xdd);
        __m512i y0 = _mm512_maskz_shuffle_i32x4(0xffff, u[8 + j], u[12 + j], 0x88), y1 = _mm512_maskz_shuffle_i32x4(0xffff, u[8 + j], u[12 + j], 0xdd);
        v[j] = _mm512_maskz_shuffle_i32x4(0xffff, x0, y0, 0x88); v[4 + j] = _mm512_maskz_shuffle_i32x4(0xffff, x1, y1, 0x88);
        v[8 + j] = _mm512_maskz_shuffle_i32x4(0xffff, x0, y0, 0xdd); v[12 + j] = _mm512_maskz_shuffle_i32x4(0xffff, x1, y1, 0xdd);
    }
}

/* x rows 0..n-1 (row stride ldx), columns k0..k0+kb, as B tiles: b [ceil(n/32)][ceil(kb/32)][2 groups
   of 16 positions][hi, lo][16 column pairs][16 positions][2], zero past n and kb. */
CODI__AMX static void codi__pack_x_amx(uint16_t *b, const float *x, size_t ldx, int n, int k0, int kb) {
    int steps = (kb + 31) / 32, strips = (n + 31) / 32, q, s, g, t;
    for (q = 0; q < strips; q++)
        for (s = 0; s < steps; s++)
            for (g = 0; g < 2; g++) {
                __m512i hi[16], lo[16];
                uint16_t *bt = b + (((size_t)q * steps + s) * 4 + 2 * g) * 512;
                int left = kb - 32 * s;
                for (t = 0; t < 16; t++) {
                    int p = 32 * q + 16 * g + t;
                    const float *xp = x + (size_t)(p < n ? p : 0) * ldx + k0 + 32 * s;
                    __mmask16 m0 = (__mmask16)(p >= n ? 0 : left >= 16 ? 0xffff : (1u << left) - 1);
                    __mmask16 m1 = (__mmask16)(p >= n || left <= 16 ? 0 : left >= 32 ? 0xffff : (1u << (left - 16)) - 1);
                    __m512 v0 = _mm512_maskz_loadu_ps(m0, xp), v1 = _mm512_maskz_loadu_ps(m1, xp + 16);
                    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(v1, v0);                  /* word j: columns 2j, 2j+1 */
                    __m512 f0 = codi__widen_bf16x16_avx512(_mm512_maskz_extracti64x4_epi64(0xf, h, 0)), f1 = codi__widen_bf16x16_avx512(_mm512_maskz_extracti64x4_epi64(0xf, h, 1));
                    hi[t] = h;
                    lo[t] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(v1, f1), _mm512_sub_ps(v0, f0));
                }
                codi__transpose16_amx(hi);
                codi__transpose16_amx(lo);
                for (t = 0; t < 16; t++) {
                    _mm512_storeu_si512((void *)(bt + (size_t)t * 32), hi[t]);
                    _mm512_storeu_si512((void *)(bt + 512 + (size_t)t * 32), lo[t]);
                }
            }
}

/* bf16 weight rows r..r+nrows-1, columns k0..k0+kb, as A tiles (a plain copy, so that the tiles
   are contiguous: rows 2^n elements apart share cache sets): a [ceil(nrows/32)][ceil(kb/32)][32][32],
   zero past nrows and kb. */
CODI__AMX static void codi__pack_w_amx(uint16_t *a, const codi_matrix *w, int r, int nrows, int k0, int kb) {
    int steps = (kb + 31) / 32, t, s;
    for (t = 0; t < (nrows + 31) / 32 * 32; t++) {
        const uint16_t *row = (const uint16_t *)w->data + (size_t)(r + (t < nrows ? t : 0)) * w->cols + k0;
        uint16_t *at = a + ((size_t)(t / 32) * steps * 32 + t % 32) * 32;
        if (t + 4 < nrows)                 /* the rows ahead: each is a short piece of memory */
            for (s = 0; s < kb; s += 32) _mm_prefetch((const char *)(row + 4 * (size_t)w->cols + s), _MM_HINT_T0);
        for (s = 0; s < steps; s++) {
            int left = kb - 32 * s;
            __mmask32 m = t >= nrows ? 0 : left >= 32 ? 0xffffffffu : (1u << left) - 1;
            _mm512_storeu_si512((void *)(at + (size_t)s * 1024), _mm512_maskz_loadu_epi16(m, row + 32 * s));
        }
    }
}

/* C^T tiles 0..3 (rows [0, 16) and [16, 32) of a panel x positions [0, 16) and [16, 32) of a strip,
   in c [4][16][16]) += the panel's A tiles . the strip's B tiles b; `two`: the strip has positions
   past 16; `add`: c holds earlier column blocks. A tiles: packed, a [steps][32][32] (ld 0), or the
   weights in place, row stride ld elements (then prefetched 1 KB ahead). */
CODI__AMX static void codi__strip_amx(float *c, const uint16_t *a, size_t ld, const uint16_t *b, int steps, int two, int add) {
    size_t stride = ld ? ld * 2 : 64, step = ld ? 32 : 1024, half = ld ? 16 * ld : 512;
    int s, t;
    CODI__MEMBAR();
    if (add) { _tile_loadd(0, c, 64); _tile_loadd(1, c + 256, 64); _tile_loadd(2, c + 512, 64); _tile_loadd(3, c + 768, 64); }
    else { _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3); }
    for (s = 0; s < steps; s++, a += step, b += 2048) {
        if (ld) for (t = 0; t < 32; t++) _mm_prefetch((const char *)(a + t * ld) + 1024, _MM_HINT_T0);
        /* loads placed between the products that free their tile (tile registers are not renamed:
           this order measured 1.5-2x faster than all loads first) */
        if (two) {
            _tile_loadd(4, a, stride); _tile_loadd(6, b, 64); _tile_dpbf16ps(0, 4, 6);          /* hi of positions 0..15 */
            _tile_loadd(7, b + 1024, 64); _tile_dpbf16ps(1, 4, 7);                              /* hi of 16..31 */
            _tile_loadd(5, a + half, stride); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
            _tile_loadd(6, b + 512, 64); _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(2, 5, 6);     /* lo */
            _tile_loadd(7, b + 1536, 64); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(3, 5, 7);
        } else {                       /* tiles 1 and 3 take the lo products of rows 0..15, 16..31 */
            _tile_loadd(4, a, stride); _tile_loadd(6, b, 64); _tile_dpbf16ps(0, 4, 6);
            _tile_loadd(7, b + 512, 64); _tile_dpbf16ps(1, 4, 7);
            _tile_loadd(5, a + half, stride); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, c, 64); _tile_stored(1, c + 256, 64); _tile_stored(2, c + 512, 64); _tile_stored(3, c + 768, 64);
}

/* c [4][16 rows][16 positions] (a strip's C^T) into out[i, r] for positions i < ni, rows r < nr
   (ni <= 16: tiles 2h and 2h + 1 are the two parts of rows 16h..16h+15). */
CODI__AMX static void codi__store_amx(float *out, size_t ldo, const float *c, int ni, int nr) {
    int h, g, t;
    for (h = 0; h < 2 && 16 * h < nr; h++)
        for (g = 0; g < 2 && 16 * g < ni; g++) {
            __m512i v[16];
            int rows = nr - 16 * h < 16 ? nr - 16 * h : 16;
            const float *ct = c + (size_t)(2 * h + g) * 256;
            for (t = 0; t < 16; t++)
                v[t] = _mm512_castps_si512(ni > 16 ? _mm512_loadu_ps(ct + t * 16) : _mm512_add_ps(_mm512_loadu_ps(ct + t * 16), _mm512_loadu_ps(ct + 256 + t * 16)));
            codi__transpose16_amx(v);
            for (t = 0; t < 16 && 16 * g + t < ni; t++)
                _mm512_mask_storeu_epi32((void *)(out + (size_t)(16 * g + t) * ldo + 16 * h), (__mmask16)((1u << rows) - 1), v[t]);
        }
}

/* out[i, r] = x[i, :] . W[r, :] for positions i < n, rows r0 <= r < r1, bf16 W (out row stride ldo). */
CODI__AMX static void codi__matmul_amx(float *out, size_t ldo, const float *x, const codi_matrix *w, int n, int r0, int r1, float *work) {
    codi__tilecfg cfg;
    uint16_t *b = (uint16_t *)(void *)work, *a = b + CODI__AMX_XB / 2;
    float *cs = work + (CODI__AMX_XB + CODI__AMX_WB) / 4;      /* [rows / 32][strips][4][16][16] */
    int K = w->cols, i0, k0, j0, jb, q;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (q = 0; q < 8; q++) { cfg.rows[q] = 16; cfg.colsb[q] = 64; }
    _tile_loadconfig(&cfg);
    for (i0 = 0; i0 < n; i0 += CODI__AMX_MC) {
        int ni = n - i0 < CODI__AMX_MC ? n - i0 : CODI__AMX_MC, strips = (ni + 31) / 32;
        int kc = (int)(CODI__AMX_XB / ((size_t)strips * 32 * 4) / 32 * 32);
        int nb = (int)(CODI__AMX_CB / ((size_t)strips * 32 * 4) / 32 * 32);
        if (strips > 1 && (size_t)nb * kc * 2 > CODI__AMX_WB) nb = (int)(CODI__AMX_WB / ((size_t)kc * 2) / 32 * 32);
        for (jb = r0; jb < r1; jb += nb) {
            int je = r1 - jb < nb ? r1 : jb + nb;
            for (k0 = 0; k0 < K; k0 += kc) {
                int kb = K - k0 < kc ? K - k0 : kc, steps = (kb + 31) / 32;
                codi__pack_x_amx(b, x + (size_t)i0 * K, (size_t)K, ni, k0, kb);
                if (strips > 1) codi__pack_w_amx(a, w, jb, je - jb, k0, kb);
                for (q = 0; q < strips; q++)
                    for (j0 = jb; j0 < je; j0 += 32) {
                        float *c = cs + ((size_t)(j0 - jb) / 32 * strips + q) * 1024;
                        const uint16_t *at = a + (size_t)(j0 - jb) / 32 * steps * 1024;
                        size_t ld = 0;
                        if (strips == 1 && j0 + 32 <= w->rows && kb % 32 == 0) {   /* one strip: each weight is read once, in place */
                            at = (const uint16_t *)w->data + (size_t)j0 * K + k0; ld = (size_t)K;
                        } else if (strips == 1) { codi__pack_w_amx(a, w, j0, je - j0 < 32 ? je - j0 : 32, k0, kb); at = a; }
                        codi__strip_amx(c, at, ld, b + (size_t)q * steps * 2048, steps, ni - 32 * q > 16, k0 > 0);
                        if (k0 + kb >= K)
                            codi__store_amx(out + (size_t)(i0 + 32 * q) * ldo + j0, ldo, c, ni - 32 * q < 32 ? ni - 32 * q : 32, je - j0 < 32 ? je - j0 : 32);
                    }
            }
        }
    }
    _tile_release();
}
#endif /* CODI__AMX */

#ifdef CODI__NEON
/* Vector arrays here are indexed by constants only: GCC -O2 keeps them in registers then, but in
   memory (a load and a store per multiply-add) when a loop indexes them. */
/* 8 weights of a row from column j as two f32 x 4 (bf16 widened by a 16-bit left shift). */
static float32x4x2_t codi__w8_neon(const void *row, int dt, int j) {
    float32x4x2_t v;
    if (dt == CODI_BF16) {
        uint16x8_t h = vld1q_u16((const uint16_t *)row + j);
        v.val[0] = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16));
        v.val[1] = vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16));
    } else {
        v.val[0] = vld1q_f32((const float *)row + j);
        v.val[1] = vld1q_f32((const float *)row + j + 4);
    }
    return v;
}
/* The horizontal sums of a, b, c, d as one vector. */
static float32x4_t codi__hsum4_neon(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d) {
    return vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d));
}
/* 16 columns per step, four accumulators. */
/* a . b over the first n - n % 4 columns, before the horizontal sum (four accumulators). */
static inline float32x4_t codi__dotv_neon(const float *a, const float *b, int n) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
    }
    for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    return vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3));
}
static float codi__dot_neon(const float *a, const float *b, int n) {
    float s = vaddvq_f32(codi__dotv_neon(a, b, n));     /* (l0 + l1) + (l2 + l3), as codi__hsum4_neon */
    int i;
    for (i = n - n % 4; i < n; i++) s += a[i] * b[i];
    return s;
}
/* 4 rows per pass, 8 columns per step, two accumulators per row. */
static void codi__gemv_neon(float *out, const float *x, const uint16_t *xh, const codi_matrix *w, int r0, int r1) {
    int K = w->cols, r, j, k;
    (void)xh;
    for (r = r0; r < r1; r += 4) {
        const void *p[4];
        float32x4_t acc[8];
        float s[4];
        codi__rows4(p, w, r, r1);
        acc[0] = acc[1] = acc[2] = acc[3] = acc[4] = acc[5] = acc[6] = acc[7] = vdupq_n_f32(0);
        for (j = 0; j + 8 <= K; j += 8) {
            float32x4_t x0 = vld1q_f32(x + j), x1 = vld1q_f32(x + j + 4);
            float32x4x2_t w0 = codi__w8_neon(p[0], w->dtype, j), w1 = codi__w8_neon(p[1], w->dtype, j);
            float32x4x2_t w2 = codi__w8_neon(p[2], w->dtype, j), w3 = codi__w8_neon(p[3], w->dtype, j);
            acc[0] = vfmaq_f32(acc[0], w0.val[0], x0); acc[1] = vfmaq_f32(acc[1], w0.val[1], x1);
            acc[2] = vfmaq_f32(acc[2], w1.val[0], x0); acc[3] = vfmaq_f32(acc[3], w1.val[1], x1);
            acc[4] = vfmaq_f32(acc[4], w2.val[0], x0); acc[5] = vfmaq_f32(acc[5], w2.val[1], x1);
            acc[6] = vfmaq_f32(acc[6], w3.val[0], x0); acc[7] = vfmaq_f32(acc[7], w3.val[1], x1);
        }
        vst1q_f32(s, codi__hsum4_neon(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]), vaddq_f32(acc[4], acc[5]), vaddq_f32(acc[6], acc[7])));
        for (k = 0; k < 4; k++) {
            int t;
            for (t = j; t < K; t++) s[k] += x[t] * codi_elem_f32(p[k], w->dtype, (size_t)t);
        }
        for (k = 0; k < 4 && r + k < r1; k++) out[r + k - r0] = s[k];
    }
}
/* Several positions per pass over the weights (batched decode, short chunks): 4 weight rows,
   each 8 columns widened once into two registers and multiplied into 4 positions (16
   accumulators). out[i * ldo + r - r0] for positions i < n of x [n, cols] and rows r0 <= r < r1. */
static void codi__gemvn_neon(float *out, size_t ldo, const float *x, int n, const codi_matrix *w, int r0, int r1, float *work) {
    int K = w->cols, r, i0, j, a, b, t;
    (void)work;
    for (r = r0; r < r1; r += 4) {
        const void *p[4];
        codi__rows4(p, w, r, r1);
        for (i0 = 0; i0 < n; i0 += 4) {
            const float *xp[4];          /* past n: the last position again, computed but not stored */
            float32x4_t c[16];           /* c[4 * row + position] */
            float s[16];
            for (b = 0; b < 4; b++) xp[b] = x + (size_t)(i0 + b < n ? i0 + b : n - 1) * K;
            c[0] = c[1] = c[2] = c[3] = c[4] = c[5] = c[6] = c[7] = vdupq_n_f32(0);
            c[8] = c[9] = c[10] = c[11] = c[12] = c[13] = c[14] = c[15] = c[0];
            for (j = 0; j + 8 <= K; j += 8) {
                float32x4x2_t w0 = codi__w8_neon(p[0], w->dtype, j), w1 = codi__w8_neon(p[1], w->dtype, j);
                float32x4x2_t w2 = codi__w8_neon(p[2], w->dtype, j), w3 = codi__w8_neon(p[3], w->dtype, j);
#define CODI__FMA4(b) do { float32x4_t x0 = vld1q_f32(xp[b] + j), x1 = vld1q_f32(xp[b] + j + 4); \
        c[b] = vfmaq_f32(vfmaq_f32(c[b], w0.val[0], x0), w0.val[1], x1); c[4 + b] = vfmaq_f32(vfmaq_f32(c[4 + b], w1.val[0], x0), w1.val[1], x1); \
        c[8 + b] = vfmaq_f32(vfmaq_f32(c[8 + b], w2.val[0], x0), w2.val[1], x1); c[12 + b] = vfmaq_f32(vfmaq_f32(c[12 + b], w3.val[0], x0), w3.val[1], x1); } while (0)
                CODI__FMA4(0); CODI__FMA4(1); CODI__FMA4(2); CODI__FMA4(3);
#undef CODI__FMA4
            }
            vst1q_f32(s, codi__hsum4_neon(c[0], c[1], c[2], c[3]));
            vst1q_f32(s + 4, codi__hsum4_neon(c[4], c[5], c[6], c[7]));
            vst1q_f32(s + 8, codi__hsum4_neon(c[8], c[9], c[10], c[11]));
            vst1q_f32(s + 12, codi__hsum4_neon(c[12], c[13], c[14], c[15]));
            for (a = 0; a < 4 && r + a < r1; a++)
                for (b = 0; b < 4 && i0 + b < n; b++) {
                    for (t = j; t < K; t++) s[4 * a + b] += xp[b][t] * codi_elem_f32(p[a], w->dtype, (size_t)t);
                    out[(size_t)(i0 + b) * ldo + r + a - r0] = s[4 * a + b];
                }
        }
    }
}
/* 8 positions x 8 rows: 16 accumulators; a [kb][8], b [kb][8] */
static void codi__micro_neon(int kb, const void *av, const void *bv, float *c, size_t ldc, int add) {
    const float *a = (const float *)av, *b = (const float *)bv;
    float32x4_t acc[16];
    int k;
    acc[0] = acc[1] = acc[2] = acc[3] = acc[4] = acc[5] = acc[6] = acc[7] = vdupq_n_f32(0);
    acc[8] = acc[9] = acc[10] = acc[11] = acc[12] = acc[13] = acc[14] = acc[15] = acc[0];
    for (k = 0; k < kb; k++, a += 8, b += 8) {
        float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
#define CODI__FMA(i, av, lane) do { acc[2 * (i)] = vfmaq_laneq_f32(acc[2 * (i)], b0, av, lane); \
        acc[2 * (i) + 1] = vfmaq_laneq_f32(acc[2 * (i) + 1], b1, av, lane); } while (0)
        CODI__FMA(0, a0, 0); CODI__FMA(1, a0, 1); CODI__FMA(2, a0, 2); CODI__FMA(3, a0, 3);
        CODI__FMA(4, a1, 0); CODI__FMA(5, a1, 1); CODI__FMA(6, a1, 2); CODI__FMA(7, a1, 3);
#undef CODI__FMA
    }
#define CODI__ST(i) do { float *cr = c + (size_t)(i) * ldc; \
        if (add) { acc[2 * (i)] = vaddq_f32(acc[2 * (i)], vld1q_f32(cr)); acc[2 * (i) + 1] = vaddq_f32(acc[2 * (i) + 1], vld1q_f32(cr + 4)); } \
        vst1q_f32(cr, acc[2 * (i)]); vst1q_f32(cr + 4, acc[2 * (i) + 1]); } while (0)
    CODI__ST(0); CODI__ST(1); CODI__ST(2); CODI__ST(3); CODI__ST(4); CODI__ST(5); CODI__ST(6); CODI__ST(7);
#undef CODI__ST
}
/* The 4 x 4 block with rows r0..r3, transposed: its column t stored at dst + t * ld. */
static void codi__store_t4_neon(float *dst, size_t ld, float32x4_t r0, float32x4_t r1, float32x4_t r2, float32x4_t r3) {
    float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1)), t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
    float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3)), t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
    /* t0 = r0[0] r1[0] r0[2] r1[2], t1 = r0[1] r1[1] r0[3] r1[3]; t2, t3 the same of r2, r3 */
    vst1q_f32(dst, vreinterpretq_f32_f64(vtrn1q_f64(t0, t2)));
    vst1q_f32(dst + ld, vreinterpretq_f32_f64(vtrn1q_f64(t1, t3)));
    vst1q_f32(dst + 2 * ld, vreinterpretq_f32_f64(vtrn2q_f64(t0, t2)));
    vst1q_f32(dst + 3 * ld, vreinterpretq_f32_f64(vtrn2q_f64(t1, t3)));
}
/* As codi__pack_b, 4 rows x 8 columns at a time: widen, transpose in registers, store. */
static void codi__pack_b_neon(float *b, const codi_matrix *w, int r0, int nrows, int k0, int kb, int nr) {
    int j, k, t;
    if (nrows < nr || nr % 4) { codi__pack_b(b, w, r0, nrows, k0, kb, nr); return; }
    for (j = 0; j < nr; j += 4) {
        const void *p[4];
        codi__rows4(p, w, r0 + j, r0 + nr);
        for (k = 0; k + 8 <= kb; k += 8) {
            float32x4x2_t v0 = codi__w8_neon(p[0], w->dtype, k0 + k), v1 = codi__w8_neon(p[1], w->dtype, k0 + k);
            float32x4x2_t v2 = codi__w8_neon(p[2], w->dtype, k0 + k), v3 = codi__w8_neon(p[3], w->dtype, k0 + k);
            codi__store_t4_neon(b + (size_t)k * nr + j, (size_t)nr, v0.val[0], v1.val[0], v2.val[0], v3.val[0]);
            codi__store_t4_neon(b + (size_t)(k + 4) * nr + j, (size_t)nr, v0.val[1], v1.val[1], v2.val[1], v3.val[1]);
        }
        for (; k < kb; k++)
            for (t = 0; t < 4; t++) b[(size_t)k * nr + j + t] = codi_elem_f32(p[t], w->dtype, (size_t)(k0 + k));
    }
}
/* y += a * x */
static void codi__axpy_neon(float *y, float a, const float *x, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}
/* codi__attend_dot_axpy in blocks: each position's scores for 4 heads summed horizontally
   together, then the weighted values in tiles of 4 heads x 16 columns (each V row read once per
   tile). The sums are codi__dot_neon's and codi__axpy_neon's, in their order: the same bits. */
static void codi__attend_neon(float *out, const float *q, int nq, const float *keys, const float *vals, int T, int HD, float *sc) {
    float scale = 1.0f / sqrtf((float)HD), tmp[4];
    int h0, h, t, j;
    if (HD % 16) { codi__attend_dot_axpy(codi__dot_neon, codi__axpy_neon, out, q, nq, keys, vals, T, HD, sc); return; }
    for (h0 = 0; h0 < nq; h0 += 4) {          /* past nq: the last head again, not stored */
        const float *q0 = q + (size_t)h0 * HD, *q1 = q + (size_t)(h0 + 1 < nq ? h0 + 1 : nq - 1) * HD;
        const float *q2 = q + (size_t)(h0 + 2 < nq ? h0 + 2 : nq - 1) * HD, *q3 = q + (size_t)(h0 + 3 < nq ? h0 + 3 : nq - 1) * HD;
        for (t = 0; t < T; t++) {
            const float *kt = keys + (size_t)t * HD;
            vst1q_f32(tmp, vmulq_n_f32(codi__hsum4_neon(codi__dotv_neon(q0, kt, HD), codi__dotv_neon(q1, kt, HD),
                                                        codi__dotv_neon(q2, kt, HD), codi__dotv_neon(q3, kt, HD)), scale));
            for (h = 0; h < 4 && h0 + h < nq; h++) sc[(size_t)(h0 + h) * T + t] = tmp[h];
        }
    }
    codi__softmax_weights(sc, nq, T);
    for (h0 = 0; h0 < nq; h0 += 4) {
        const float *w0 = sc + (size_t)h0 * T, *w1 = sc + (size_t)(h0 + 1 < nq ? h0 + 1 : nq - 1) * T;
        const float *w2 = sc + (size_t)(h0 + 2 < nq ? h0 + 2 : nq - 1) * T, *w3 = sc + (size_t)(h0 + 3 < nq ? h0 + 3 : nq - 1) * T;
        for (j = 0; j < HD; j += 16) {
            const float *vt = vals + j;
            float32x4_t a00 = vdupq_n_f32(0), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
            float32x4_t a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
            for (t = 0; t < T; t++, vt += HD) {
                float32x4_t x0 = vld1q_f32(vt), x1 = vld1q_f32(vt + 4), x2 = vld1q_f32(vt + 8), x3 = vld1q_f32(vt + 12);
#define CODI__ACC(h) a##h##0 = vfmaq_n_f32(a##h##0, x0, w##h[t]); a##h##1 = vfmaq_n_f32(a##h##1, x1, w##h[t]); \
        a##h##2 = vfmaq_n_f32(a##h##2, x2, w##h[t]); a##h##3 = vfmaq_n_f32(a##h##3, x3, w##h[t])
                CODI__ACC(0); CODI__ACC(1); CODI__ACC(2); CODI__ACC(3);
#undef CODI__ACC
            }
            {
                float32x4_t acc[16];
                acc[0] = a00; acc[1] = a01; acc[2] = a02; acc[3] = a03; acc[4] = a10; acc[5] = a11; acc[6] = a12; acc[7] = a13;
                acc[8] = a20; acc[9] = a21; acc[10] = a22; acc[11] = a23; acc[12] = a30; acc[13] = a31; acc[14] = a32; acc[15] = a33;
                for (h = 0; h < 4 && h0 + h < nq; h++)
                    for (t = 0; t < 4; t++) vst1q_f32(out + (size_t)(h0 + h) * HD + j + 4 * t, acc[4 * h + t]);
            }
        }
    }
}
#endif /* CODI__NEON */

/* The paths, slowest first. */
static const codi__kernel codi__kernels[] = {
    { "scalar", codi__gemv_scalar, NULL, NULL, 0, 0, 0, NULL, NULL, codi__pack_b, codi__dot, codi__axpy, NULL, codi__attend_scalar },
#ifdef CODI__X86
    { "avx2", codi__gemv_avx2, codi__gemvn_avx2, codi__micro_avx2, 6, 16, 0, NULL, NULL, codi__pack_b_avx2, codi__dot_avx2, codi__axpy_avx2, NULL, codi__attend_avx2 },
    { "avx512", codi__gemv_avx512, codi__gemvn_avx512, codi__micro12_avx512, 12, 32, 0, NULL, NULL, codi__pack_b_avx512, codi__dot_avx512, codi__axpy_avx2, NULL, codi__attend_avx512 },
    { "avx512bf16", codi__gemv_avx512bf16, codi__gemvn_avx512, codi__micro_avx512bf16, 8, 32, 1, codi__gemv_avx512, codi__micro_avx512,
      codi__pack_b_avx2, codi__dot_avx512, codi__axpy_avx2, NULL, codi__attend_avx512 },
#endif
#ifdef CODI__AMX
    { "amx", codi__gemv_avx512, codi__gemvn_avx512, codi__micro_avx512, 8, 32, 0, NULL, NULL, codi__pack_b_avx2, codi__dot_avx512,
      codi__axpy_avx2, codi__matmul_amx, codi__attend_avx512 },
#endif
#ifdef CODI__NEON
    { "neon", codi__gemv_neon, codi__gemvn_neon, codi__micro_neon, 8, 8, 0, NULL, NULL, codi__pack_b_neon, codi__dot_neon, codi__axpy_neon, NULL, codi__attend_neon },
#endif
};
#define CODI__N_KERNELS ((int)(sizeof codi__kernels / sizeof codi__kernels[0]))

#ifdef CODI__X86
/* The bf16 compute mode's kernels (not a path of its own: a model loaded with CODI_COMPUTE_BF16
   runs its forward passes' products with bf16 weights on them, whatever the path; f32 weights and
   everything else as the path does). */
static const codi__kernel codi__kernel_bf16 = { "bf16", codi__gemv_avx512bf16, codi__gemvn_bf16_avx512, codi__micro12_bf16_avx512, 12, 32, 2,
    codi__gemv_avx512, codi__micro12_avx512, codi__pack_b_avx512, codi__dot_avx512, codi__axpy_avx2, NULL, codi__attend_avx512 };
#endif

#ifdef CODI__AMX
#include <cpuid.h>
/* 1 if the CPU has AMX-TILE and AMX-BF16 (CPUID 7.0 EDX bits 24, 22), AVX512-BF16, and Linux lets
   this process use the tile data (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA; syscall 158,
   asked once: syscall() itself needs feature macros under -std=c99). */
static int codi__amx_usable(void) {
    static int granted = -1;
    if (granted < 0) {
        unsigned eax, ebx, ecx, edx;
        long rc = -1;
        granted = 0;
        if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx >> 24 & 1) || !(edx >> 22 & 1) ||
            !__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512bw")) return 0;
#ifdef __linux__
        __asm__ __volatile__("syscall" : "=a"(rc) : "a"(158L), "D"(0x1023L), "S"(18L) : "rcx", "r11", "memory");
#endif
        granted = rc == 0;
    }
    return granted;
}
#endif

/* 1 if this CPU (and OS) runs path k. */
static int codi__kernel_runs(const codi__kernel *k) {
#ifdef CODI__X86
    __builtin_cpu_init();
    if (!strcmp(k->name, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strncmp(k->name, "avx512", 6) && !(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return 0;
    if (!strcmp(k->name, "avx512bf16")) return __builtin_cpu_supports("avx512bf16");
#ifdef CODI__AMX
    if (!strcmp(k->name, "amx")) return codi__amx_usable();
#endif
#endif
    (void)k;
    return 1;
}

static const codi__kernel *codi__kernel_now;   /* the path in use; set once, by codi_load (or codi_set_kernel) before any pass */

/* 1 if this CPU runs the bf16 compute mode's kernels (codi__kernel_bf16). */
static int codi__compute_bf16_runs(void) {
    int i;
    for (i = 0; i < CODI__N_KERNELS; i++)
        if (!strcmp(codi__kernels[i].name, "avx512bf16")) return codi__kernel_runs(&codi__kernels[i]);
    return 0;
}

CODI_API int codi_set_kernel(const char *name) {
    int i;
    for (i = 0; i < CODI__N_KERNELS; i++)
        if (!strcmp(codi__kernels[i].name, name) && codi__kernel_runs(&codi__kernels[i])) { codi__kernel_now = &codi__kernels[i]; return 0; }
    return -1;
}

/* CODI_KERNEL from the environment if this CPU runs it, else the fastest path (not avx512bf16: it
   does the work of avx512 in two bf16 halves). */
static const codi__kernel *codi__kernel_active(void) {
    if (!codi__kernel_now) {
        const char *env = getenv("CODI_KERNEL");
        int i;
        if (!env || codi_set_kernel(env) != 0)
            for (i = CODI__N_KERNELS - 1; i >= 0 && !codi__kernel_now; i--)
                if (!codi__kernels[i].bf16_pairs && codi__kernel_runs(&codi__kernels[i])) codi__kernel_now = &codi__kernels[i];
    }
    return codi__kernel_now;
}

CODI_API const char *codi_kernel_name(void) { return codi__kernel_active()->name; }

/* The kernels of a forward pass's products: the bf16 compute mode's, else the path's. */
static const codi__kernel *codi__kernel_for(int compute) {
#ifdef CODI__X86
    if (compute == CODI_COMPUTE_BF16) return &codi__kernel_bf16;
#endif
    (void)compute;
    return codi__kernel_active();
}

CODI_API int codi_kernels_available(const char **names, int cap) {
    int i, n = 0;
    for (i = 0; i < CODI__N_KERNELS; i++)
        if (codi__kernel_runs(&codi__kernels[i])) { if (n < cap) names[n] = codi__kernels[i].name; n++; }
    return n;
}

CODI_API int codi_weights_misaligned(const codi_model *m, int *n_matrices) {
    const codi_weights *w = &m->w;
    const codi_matrix *all[4] = { &w->embed, &w->lm_head, &w->prj1, &w->prj3 };
    int l, k, n = 0, bad = 0;
    for (k = 0; k < 4; k++) if (all[k]->data) { n++; bad += (uintptr_t)all[k]->data % 64 != 0; }
    for (l = 0; l < m->config.n_layers; l++) {
        const codi_layer *L = &w->layers[l];
        const codi_matrix *mats[7] = { &L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down };
        for (k = 0; k < 7; k++) if (mats[k]->data) { n++; bad += (uintptr_t)mats[k]->data % 64 != 0; }
    }
    if (n_matrices) *n_matrices = n;
    return bad;
}

/* Floats of work one thread needs for codi__matmul_range of up to n positions and k columns
   (the activations packed over all k (twice over as bf16 hi and lo parts), a slice of weight
   panels; or x as bf16 hi and lo; or the AMX blocks). */
static size_t codi__work_floats(int n, int k) {
    size_t gemm = (size_t)(n + 16) * (size_t)(k + 1) + (size_t)CODI__KC * CODI__NB_MAX + 16;
#ifdef CODI__AMX
    if (gemm < CODI__AMX_WORK) return CODI__AMX_WORK;
#endif
    return gemm;
}

/* out[i, r] = x[i, :] . W[r, :] for positions i < n and rows r0 <= r < r1 (out row stride ldo,
   x rows contiguous [n, cols]; work: codi__work_floats(n, cols)). Fewer than GEMM_MIN positions:
   the multi-position GEMV (or, on a path without one, the GEMV per position); else the GEMM:
   the activations are packed once (strips of MR positions over all K); the rows go in blocks
   whose outputs stay in L2; for each KC-deep slice of a block, its panels of NR weight rows are
   packed (widened) once into L2, and each strip (in L1) meets every panel, adding into the
   block's outputs; the next slice's weight rows are prefetched meanwhile. */
static void codi__matmul_range(const codi__kernel *kn, float *out, size_t ldo, const float *x, const codi_matrix *w,
                               int n, int r0, int r1, float *work) {
    int K = w->cols, pairs = kn->bf16_pairs && w->dtype == CODI_BF16, parts = kn->bf16_pairs == 2 ? 1 : 2, mr = kn->mr, nr = kn->nr, i, k0, jb, nb, s;
    codi__gemv_fn gemv = kn->bf16_pairs && !pairs ? kn->gemv_f32w : kn->gemv;
    codi__micro_fn micro = kn->bf16_pairs && !pairs ? kn->micro_f32w : kn->micro;
    size_t strips, es = codi__dtype_size(w->dtype);
    float tile[16 * 32], *ap, *bp;
    if (r0 >= r1) return;
    if (kn->tiles && w->dtype == CODI_BF16 && n >= CODI__AMX_MIN) { kn->tiles(out, ldo, x, w, n, r0, r1, work); return; }
    if (!micro) {                 /* the scalar reference: each weight row meets every position while in L1 */
        int r;
        for (r = r0; r < r1; r++)
            for (i = 0; i < n; i++) gemv(out + (size_t)i * ldo + r, x + (size_t)i * K, NULL, w, r, r + 1);
        return;
    }
    if (n > 1 && n < CODI__GEMM_MIN && kn->gemvn) { kn->gemvn(out + r0, ldo, x, n, w, r0, r1, work); return; }
    if (n < CODI__GEMM_MIN) {
        uint16_t *xh = (uint16_t *)(void *)work;
        for (i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * K;
            if (pairs) for (k0 = 0; k0 < K; k0++) { xh[k0] = codi__f32_to_bf16(xi[k0]); xh[K + k0] = parts == 2 ? codi__bf16_lo(xi[k0]) : 0; }
            gemv(out + (size_t)i * ldo + r0, xi, xh, w, r0, r1);
        }
        return;
    }
    strips = (size_t)(n + mr - 1) / mr;
    ap = work + (16 - (uintptr_t)work / 4 % 16) % 16;                 /* 64-byte aligned */
    bp = ap + strips * (size_t)(pairs ? (K + 1) / 2 * parts : K) * mr;
    for (k0 = 0; k0 < K; k0 += CODI__KC) {                              /* a [K / KC][strips][KC][mr]: each slice contiguous */
        int kb = K - k0 < CODI__KC ? K - k0 : CODI__KC;
        if (pairs) codi__pack_a_bf16((uint32_t *)(void *)ap + strips * (size_t)(k0 / 2 * parts) * mr, x, (size_t)K, n, k0, kb, mr, parts);
#ifdef CODI__X86
        else codi__pack_a_avx2(ap + strips * (size_t)k0 * mr, x, (size_t)K, n, k0, kb, mr);   /* (the x86 SIMD paths all have AVX2) */
#else
        else codi__pack_a(ap + strips * (size_t)k0 * mr, x, (size_t)K, n, k0, kb, mr);
#endif
    }
    nb = CODI__NB_FLOATS / n / nr * nr;
    nb = nb < nr ? nr : nb > CODI__NB_MAX ? CODI__NB_MAX : nb;
    for (jb = r0; jb < r1; jb += nb) {
        int je = r1 - jb < nb ? r1 : jb + nb, np = (je - jb + nr - 1) / nr;
        for (k0 = 0; k0 < K; k0 += CODI__KC) {
            int kb = K - k0 < CODI__KC ? K - k0 : CODI__KC, p;
            int kn0 = k0 + CODI__KC < K ? k0 + CODI__KC : 0, jn = k0 + CODI__KC < K ? jb : je;   /* the slice packed next */
            int nn = r1 - jn < nb ? r1 - jn : nb, line_end = (K - kn0 < CODI__KC ? K - kn0 : CODI__KC) * (int)es;
            const float *a = ap + strips * (size_t)(pairs ? k0 / 2 * parts : k0) * mr;     /* the slice's strip 0 */
            size_t astrip = (size_t)(pairs ? (kb + 1) / 2 * parts : kb) * mr, bpanel = (size_t)(pairs ? (kb + 1) / 2 : kb) * nr;
            for (p = 0; p < np; p++) {
                int j0 = jb + p * nr, nj = je - j0 < nr ? je - j0 : nr;
#ifdef CODI__X86
                if (pairs) codi__pack_b_bf16_avx512((uint32_t *)(void *)bp + p * bpanel, w, j0, nj, k0, kb, nr);   /* (the bf16 paths all have AVX-512) */
#else
                if (pairs) codi__pack_b_bf16((uint32_t *)(void *)bp + p * bpanel, w, j0, nj, k0, kb, nr);
#endif
                else kn->pack_b(bp + p * bpanel, w, j0, nj, k0, kb, nr);
            }
            for (s = 0; s * mr < n; s++) {
                int mi = n - s * mr < mr ? n - s * mr : mr, u, v;
                for (u = s * nn / (int)strips; u < (s + 1) * nn / (int)strips; u++)   /* its rows, spread over the strips */
                    for (v = 0; v < line_end; v += 64) CODI__PREFETCH((const char *)w->data + ((size_t)(jn + u) * K + kn0) * es + v);
                for (p = 0; p < np; p++) {
                    int j0 = jb + p * nr, nj = je - j0 < nr ? je - j0 : nr;
                    float *c = out + (size_t)s * mr * ldo + j0;
                    if (mi == mr && nj == nr) { micro(kb, a + astrip * s, bp + p * bpanel, c, ldo, k0 > 0); continue; }
                    micro(kb, a + astrip * s, bp + p * bpanel, tile, (size_t)nr, 0);     /* an edge tile */
                    for (u = 0; u < mi; u++)
                        for (v = 0; v < nj; v++) c[(size_t)u * ldo + v] = (k0 > 0 ? c[(size_t)u * ldo + v] : 0) + tile[u * nr + v];
                }
            }
        }
    }
}

/* >>batch: many CODI runs through one pass per step (continuous batching, prefix branches) ----

   Why: codi_run advances one position per pass, and each pass reads every weight. Decoding is
   bound by memory bandwidth: reading a 1B model's 2.5 GB of bf16 weights takes longer than the
   2.5 GFLOP of one position's multiply-adds. So B runs that each need one more position can share
   one read: codi_batch stacks them as B rows of one pass (codi__forward_rows, the same pass that
   codi_forward_batch makes), and a step of B runs costs about one run's step, until the arithmetic
   of B rows catches up with the read (the roofline: time = max(FLOPs / peak, bytes / bandwidth)).

   What each run is: its own codi_state (KV cache, residuals, logits, hooks, phase and step), its own
   request (prompt ids or a prefix state, n_latent, max_answer, steering, callbacks), and a stage:
     prefill   its prompt ids, as many per pass as the pass has free rows (chunked prefill), so a
               new run's prompt rides in the same pass as the others' decode rows, as one GEMM, and
               no pass takes more than C rows (C = max(max_runs, min(max_pos, 512))): runs that are
               decoding wait at most one chunk;
     latent k  z_k = prj(final hidden of its last position), fed as the next input embedding; the
               projections of all runs at a latent step are one product of each prj matrix;
     answer    eot, then greedy tokens (argmax over all ids but the last) fed back until an eos or
               max_answer, exactly as codi_run_answer.
   One step: (1) queued runs take free slots (a prefix run copies its prefix state here); (2) the
   rows of the pass are gathered as input embeddings: first one decode row per latent or answer
   run, then the prefill runs' prompt positions, oldest run first, up to C rows in all; (3) each
   state's phase and step are set as codi_run sets them, so hooks, codi_steer_install's among them,
   see the same point, layer, position, phase and step values as single-stream; (4) one pass:
   attention per run (a prefill segment long enough for the blocked GEMMs, 16+ positions at 4 heads
   per kv head, by them; other rows one by one against their own cache), lm_head only for each run's last row; (5) each run moves on
   (latent_logits, latents, after_latent after the prefill and after each latent step, answer
   tokens, on_token); (6) runs that ended go to the callback and leave their slot to the queue
   (continuous batching: the batch stays full while there is work).

   Equal to codi_run: the same operations in the same order per run; only the float summation order
   of a product depends on how many rows share it (1 row: GEMV, 2..63: the multi-position GEMV, 64+:
   the GEMM), so logits agree within ~1e-5 of their scale (1e-4 on the bf16 hi/lo paths) and a
   batch of one run is bit-identical to codi_run. A hook that stops the pass fails its own run; the
   pass is then made again for the others (their hooks see those points twice). lm_head skips a
   latent row whose logits nobody reads (no latent_logits, no after_latent other than
   codi_steer_after_latent, eot fed before the answer): its state's logits then stay as they were.

   Branches: a request may start from a prefix state (prompt + l latents computed once, e.g. by
   codi_run_latents with n_latent = l): the run begins with a copy of it (codi_state_copy) at latent
   step l + 1, after calling after_latent(l) on its copy (so KV-cache edits "after_prefill" or
   "after_latent:l" apply to the branch); hooks for the prefill or steps <= l do not run (that work
   is the prefix's). Copy, not a shared read-only KV prefix: measured at the 1B's shapes (codi bench:
   branch_copy_ms, branch_bN_prefix1), copying a 50-token prefix (its residuals and K/V, 10 MB) costs
   ~2 ms per branch against ~150 ms of a branch's share of the batch-32 passes (1-2%), and branches
   from a 1-token prefix (no copy and no prefix K/V to read: more than sharing could save, since
   shared branches still attend over the prefix) ran 5-7% faster, near the machine's noise (CPU
   share ~0.5). So each branch keeps a whole codi_state: hooks, KV-cache
   edits of prefix positions and readers of its residuals work as on any state (a shared prefix
   would need copy-on-write for those edits). */

enum { CODI__RUN_FREE = 0, CODI__RUN_PREFILL, CODI__RUN_LATENT, CODI__RUN_ANSWER, CODI__RUN_DONE };

typedef struct {
    codi_batch_request req;  /* req.ids points to ids */
    int32_t *ids;            /* owned copy of the prompt */
    long index;              /* submission order */
} codi__batch_req;

typedef struct {
    codi__batch_req q;
    codi_state *s;
    codi_run_opts o;         /* the request's, with the steer's after_latent */
    codi_run_result r;
    int stage;               /* CODI__RUN_* */
    int fed;                 /* prefill: prompt ids fed so far */
    int k;                   /* latent: the step fed next */
    int32_t input;           /* answer: the token fed next (eot or the last answer token) */
    int rows;                /* rows in the current pass */
    int status;              /* 0, or -1 failed */
} codi__batch_run;

struct codi_batch {
    const codi_model *m;
    codi_state *scratch;     /* the pass's scratch buffers and thread pool (chunk C) */
    codi__batch_run *runs;   /* [max_runs] slots */
    int max_runs, max_pos, chunk, n_active;
    codi__batch_req *queue;  /* [q_head, q_n) waiting */
    long q_head, q_n, q_cap, n_submitted;
    codi__row *rows;         /* [C] the pass */
    int *row_run;            /* [C] slot of each row */
    float *embeds;           /* [C, D] inputs of the pass */
    float *ph, *pt, *pu;     /* [max_runs, D], [max_runs, P], [max_runs, D]: the batched projection */
    float *pwork;            /* [threads, pwork_stride] */
    size_t pwork_stride;
    char error[256];
};

CODI_API const char *codi_batch_error(const codi_batch *b) { return b->error; }
CODI_API int codi_batch_pending(const codi_batch *b) { return b->n_active + (int)(b->q_n - b->q_head); }

CODI_API void codi_batch_free(codi_batch *b) {
    int i;
    long j;
    if (!b) return;
    for (i = 0; b->runs && i < b->max_runs; i++) { codi_state_free(b->runs[i].s); CODI_FREE(b->runs[i].q.ids); }
    for (j = b->q_head; j < b->q_n; j++) CODI_FREE(b->queue[j].ids);
    codi_state_free(b->scratch);
    CODI_FREE(b->runs); CODI_FREE(b->queue); CODI_FREE(b->rows); CODI_FREE(b->row_run); CODI_FREE(b->embeds);
    CODI_FREE(b->ph); CODI_FREE(b->pt); CODI_FREE(b->pu); CODI_FREE(b->pwork);
    CODI_FREE(b);
}

CODI_API codi_batch *codi_batch_new(const codi_model *m, int max_runs, int max_pos, int n_threads) {
    const codi_config *c = &m->config;
    size_t D = (size_t)c->dim, P = (size_t)(c->prj_dim > 0 ? c->prj_dim : 1), R;
    codi_batch *b;
    int i, threads;
    if (max_runs < 1 || max_runs > 4096 || max_pos < 1) return NULL;
    if (!(b = (codi_batch *)CODI_MALLOC(sizeof *b))) return NULL;
    memset(b, 0, sizeof *b);
    b->m = m; b->max_runs = max_runs; b->max_pos = max_pos; R = (size_t)max_runs;
    b->chunk = max_pos < CODI__CHUNK ? max_pos : CODI__CHUNK;
    if (b->chunk < max_runs) b->chunk = max_runs;
    b->scratch = codi__state_alloc(m, max_pos, n_threads, b->chunk);
    b->runs = (codi__batch_run *)CODI_MALLOC(R * sizeof *b->runs);
    b->rows = (codi__row *)CODI_MALLOC((size_t)b->chunk * sizeof *b->rows);
    b->row_run = (int *)CODI_MALLOC((size_t)b->chunk * sizeof *b->row_run);
    b->embeds = (float *)CODI_MALLOC((size_t)b->chunk * D * sizeof(float));
    b->ph = (float *)CODI_MALLOC(R * D * sizeof(float));
    b->pt = (float *)CODI_MALLOC(R * P * sizeof(float));
    b->pu = (float *)CODI_MALLOC(R * D * sizeof(float));
    threads = b->scratch ? ((codi__state_internal *)b->scratch->internal)->n_threads : 1;
    b->pwork_stride = codi__work_floats(max_runs, (int)(D > P ? D : P));
    b->pwork = (float *)CODI_MALLOC((size_t)threads * b->pwork_stride * sizeof(float));
    if (b->runs) memset(b->runs, 0, R * sizeof *b->runs);
    if (!b->scratch || !b->runs || !b->rows || !b->row_run || !b->embeds || !b->ph || !b->pt || !b->pu || !b->pwork) {
        codi_batch_free(b); return NULL;
    }
    for (i = 0; i < max_runs; i++)      /* scratch of one position each: the passes use the batch's */
        if (!(b->runs[i].s = codi__state_alloc(m, max_pos, 1, 1))) { codi_batch_free(b); return NULL; }
    return b;
}

/* The latent steps a prefix state has made (its phase and step), or -1 if it is not a prefix. */
static int codi__prefix_latents(const codi_state *p) {
    if (p->n_pos <= 0) return -1;
    if (p->phase == CODI_PHASE_PREFILL) return 0;
    return p->phase == CODI_PHASE_LATENT ? p->step : -1;
}

CODI_API int codi_batch_submit(codi_batch *b, const codi_batch_request *req) {
    const codi_config *c = &b->m->config;
    const codi_run_opts *o = &req->opts;
    int i, start, l = 0, cap = (int)(sizeof ((codi_run_result *)0)->answer / sizeof(int32_t));
    long need;
    codi__batch_req *q;
    b->error[0] = 0;
    if ((!req->ids) == (!req->prefix)) { codi__err(b->error, sizeof b->error, "request %ld: give exactly one of ids and prefix", b->n_submitted); return -1; }
    if (o->n_latent < 0 || o->max_answer < 0 || o->max_answer > cap) {
        codi__err(b->error, sizeof b->error, "request %ld: n_latent must be >= 0 and max_answer in [0, %d]", b->n_submitted, cap); return -1;
    }
    if (o->n_latent > 0 && !c->prj_dim) { codi__err(b->error, sizeof b->error, "this model has no prj: not a CODI checkpoint"); return -1; }
    if (o->feed_eot && c->eot_id < 0) { codi__err(b->error, sizeof b->error, "this model has no CODI eot token to feed (set feed_eot = 0)"); return -1; }
    if (req->ids) {
        if (req->n_ids < 1) { codi__err(b->error, sizeof b->error, "request %ld: n_ids must be >= 1", b->n_submitted); return -1; }
        for (i = 0; i < req->n_ids; i++)
            if (req->ids[i] < 0 || req->ids[i] >= c->vocab) {
                codi__err(b->error, sizeof b->error, "request %ld: token id %ld at input %d is out of range [0, %d)", b->n_submitted, (long)req->ids[i], i, c->vocab);
                return -1;
            }
        start = req->n_ids;
    } else {
        if (!codi__state_fits(b->m, req->prefix)) { codi__err(b->error, sizeof b->error, "request %ld: the prefix state was made for another model", b->n_submitted); return -1; }
        if ((l = codi__prefix_latents(req->prefix)) < 0 || l > o->n_latent) {
            codi__err(b->error, sizeof b->error, "request %ld: the prefix must be a state after its prefill and at most n_latent (%d) latent steps "
                      "(it has %d positions, phase %d, step %d)", b->n_submitted, o->n_latent, req->prefix->n_pos, req->prefix->phase, req->prefix->step);
            return -1;
        }
        start = req->prefix->n_pos;
    }
    need = (long)start + (o->n_latent - l) + (o->feed_eot ? 1 : 0) + (o->max_answer > 1 ? o->max_answer - 1 : 0);
    if (need > b->max_pos) {
        codi__err(b->error, sizeof b->error, "request %ld: %ld positions (prompt %d, latents, eot, answer) do not fit the batch's %d",
                  b->n_submitted, need, start, b->max_pos);
        return -1;
    }
    if (b->q_head > 0 && b->q_n == b->q_cap) {         /* reuse the room of the runs that joined */
        memmove(b->queue, b->queue + b->q_head, (size_t)(b->q_n - b->q_head) * sizeof *b->queue);
        b->q_n -= b->q_head; b->q_head = 0;
    }
    if (b->q_n == b->q_cap) {
        long ncap = b->q_cap ? 2 * b->q_cap : 64;
        codi__batch_req *grown = (codi__batch_req *)CODI_REALLOC(b->queue, (size_t)ncap * sizeof *grown);
        if (!grown) { codi__err(b->error, sizeof b->error, "out of memory"); return -1; }
        b->queue = grown; b->q_cap = ncap;
    }
    q = &b->queue[b->q_n];
    q->req = *req; q->ids = NULL; q->index = b->n_submitted;
    if (req->ids) {
        if (!(q->ids = (int32_t *)CODI_MALLOC((size_t)req->n_ids * sizeof(int32_t)))) { codi__err(b->error, sizeof b->error, "out of memory"); return -1; }
        memcpy(q->ids, req->ids, (size_t)req->n_ids * sizeof(int32_t));
        q->req.ids = q->ids;
    }
    b->q_n++; b->n_submitted++;
    return 0;
}

/* Fails run x with its state's error (or why). */
static void codi__batch_fail(codi__batch_run *x, const char *why) {
    if (!x->s->error[0]) codi__err(x->s->error, sizeof x->s->error, "%s", why);
    x->status = -1; x->stage = CODI__RUN_DONE;
}

/* after_latent after step k; 0, or -1 with the run failed. */
static int codi__batch_after_latent(codi__batch_run *x, int k) {
    if (codi__after_latent(&x->o, x->s, k) == 0) return 0;
    x->status = -1; x->stage = CODI__RUN_DONE;
    return -1;
}

/* The next answer token from the state's logits, as codi_run_answer: DONE after an eos or
   max_answer, else the token becomes the next input. */
static void codi__batch_take_token(const codi_model *m, codi__batch_run *x) {
    int32_t tok;
    if (x->r.n_answer == x->o.max_answer) { x->stage = CODI__RUN_DONE; return; }
    tok = codi_argmax_answer(m, x->s->logits);
    if (x->o.answer_logits) memcpy(x->o.answer_logits + (size_t)x->r.n_answer * m->config.vocab, x->s->logits, (size_t)m->config.vocab * sizeof(float));
    x->r.answer[x->r.n_answer++] = tok;
    if (x->o.on_token) x->o.on_token(x->o.on_token_user, tok);
    if ((x->o.stop_at_eos && codi_is_eos(&m->config, tok)) || x->r.n_answer == x->o.max_answer) { x->stage = CODI__RUN_DONE; return; }
    x->input = tok; x->s->step = x->r.n_answer;
}

/* After latent step k - 1 (or the prefill): the next latent step, or the answer (eot first). */
static void codi__batch_next_latent(const codi_model *m, codi__batch_run *x) {
    if (x->k <= x->o.n_latent) { x->stage = CODI__RUN_LATENT; return; }
    if (x->o.latents && m->config.prj_dim && codi_project(m, x->s->final_hidden, x->o.latents + (size_t)x->o.n_latent * m->config.dim)) {
        codi__batch_fail(x, "out of memory"); return;
    }
    x->stage = CODI__RUN_ANSWER;
    x->s->phase = CODI_PHASE_ANSWER; x->s->step = 0;
    if (x->o.feed_eot) x->input = m->config.eot_id;
    else codi__batch_take_token(m, x);
}

/* Run x after a pass that gave it x->rows rows. */
static void codi__batch_advance(const codi_model *m, codi__batch_run *x) {
    int V = m->config.vocab;
    if (x->stage == CODI__RUN_PREFILL) {
        if ((x->fed += x->rows) < x->q.req.n_ids) return;
        x->r.prompt_len = x->fed;
        if (x->o.latent_logits) memcpy(x->o.latent_logits, x->s->logits, (size_t)V * sizeof(float));
        if (codi__batch_after_latent(x, 0)) return;
        x->k = 1;
        codi__batch_next_latent(m, x);
    } else if (x->stage == CODI__RUN_LATENT) {
        if (x->o.latents) memcpy(x->o.latents + (size_t)(x->k - 1) * m->config.dim, codi_state_resid(x->s, 0, x->s->n_pos - 1), (size_t)m->config.dim * sizeof(float));
        if (x->o.latent_logits) memcpy(x->o.latent_logits + (size_t)x->k * V, x->s->logits, (size_t)V * sizeof(float));
        if (codi__batch_after_latent(x, x->k)) return;
        x->k++;
        codi__batch_next_latent(m, x);
    } else if (x->stage == CODI__RUN_ANSWER) codi__batch_take_token(m, x);
}

/* Queued request q into free slot x: its state reset (or its prefix copied), hooks installed. */
static void codi__batch_start(codi_batch *b, codi__batch_run *x, const codi__batch_req *q) {
    const codi_model *m = b->m;
    codi_state *s = x->s;
    CODI_FREE(x->q.ids);
    x->q = *q;
    x->o = q->req.opts;
    memset(&x->r, 0, sizeof x->r);
    x->status = 0; x->fed = 0; x->k = 0; x->input = -1; x->rows = 0;
    codi_state_reset(s);
    codi_state_clear_hooks(s);
    if (q->req.steer && codi_steer_install(q->req.steer, s, &x->o)) { codi__batch_fail(x, "steer install failed"); return; }
    if (q->req.setup && q->req.setup(q->req.user, s, &x->o)) { codi__batch_fail(x, "the request's setup callback failed"); return; }
    if (!q->req.prefix) { x->stage = CODI__RUN_PREFILL; s->phase = CODI_PHASE_PREFILL; s->step = 0; return; }
    {
        int l = codi__prefix_latents(q->req.prefix);
        if (l < 0 || l > x->o.n_latent) { codi__batch_fail(x, "the prefix state changed after the request was submitted"); return; }
        if (codi_state_copy(m, s, q->req.prefix)) { x->status = -1; x->stage = CODI__RUN_DONE; return; }
        x->r.prompt_len = s->n_pos - l;
        if (x->o.latent_logits) memcpy(x->o.latent_logits + (size_t)l * m->config.vocab, s->logits, (size_t)m->config.vocab * sizeof(float));
        if (codi__batch_after_latent(x, l)) return;
        x->k = l + 1;
        codi__batch_next_latent(m, x);
    }
}

/* 1 if latent step x->k's logits are read: latent_logits, an after_latent callback that may read
   them (codi_steer_after_latent does not), or the first answer token without eot. */
static int codi__batch_latent_logits(const codi__batch_run *x) {
    return x->o.latent_logits || (x->o.after_latent && x->o.after_latent != codi_steer_after_latent) ||
           (x->k == x->o.n_latent && !x->o.feed_eot);
}

/* The pass's rows: one per latent or answer run, then prefill positions up to C rows. Latent
   inputs are the batched projection of each run's final hidden state. Returns the row count. */
static int codi__batch_gather(codi_batch *b) {
    const codi_model *m = b->m;
    const codi_config *c = &m->config;
    codi__state_internal *si = (codi__state_internal *)b->scratch->internal;
    int D = c->dim, P = c->prj_dim, n = 0, nl = 0, i, j;
    for (i = 0; i < b->max_runs; i++) {                    /* latent rows: z = LayerNorm(W3 gelu(W1 h + b1) + b3) */
        codi__batch_run *x = &b->runs[i];
        x->rows = 0;
        if (x->stage == CODI__RUN_LATENT) memcpy(b->ph + (size_t)nl++ * D, x->s->final_hidden, (size_t)D * sizeof(float));
    }
    if (nl) {
        codi__matmul_pool(si->pool, b->pwork, b->pwork_stride, b->pt, b->ph, &m->w.prj1, nl);
        for (i = 0; i < nl; i++)
            for (j = 0; j < P; j++) b->pt[(size_t)i * P + j] = codi__gelu(b->pt[(size_t)i * P + j] + m->w.prj1_b[j]);
        codi__matmul_pool(si->pool, b->pwork, b->pwork_stride, b->pu, b->pt, &m->w.prj3, nl);
    }
    for (i = 0, nl = 0; i < b->max_runs; i++) {
        codi__batch_run *x = &b->runs[i];
        float *e = b->embeds + (size_t)n * D;
        if (x->stage == CODI__RUN_LATENT) {
            float *u = b->pu + (size_t)nl++ * D;
            for (j = 0; j < D; j++) u[j] += m->w.prj3_b[j];
            codi__layernorm(e, u, m->w.prj_ln_w, m->w.prj_ln_b, D, c->ln_eps);
            x->s->phase = CODI_PHASE_LATENT; x->s->step = x->k;
        } else if (x->stage == CODI__RUN_ANSWER) codi__row_f32(e, &m->w.embed, x->input);
        else continue;
        b->rows[n].s = x->s; b->rows[n].pos = x->s->n_pos; b->row_run[n] = i; x->rows = 1;
        b->rows[n].no_logits = x->stage == CODI__RUN_LATENT && !codi__batch_latent_logits(x);
        n++;
    }
    while (n < b->chunk) {                                 /* prefill: the oldest unfinished prompt first */
        codi__batch_run *x = NULL;
        int take;
        for (i = 0; i < b->max_runs; i++) {
            codi__batch_run *y = &b->runs[i];
            if (y->stage == CODI__RUN_PREFILL && !y->rows && (!x || y->q.index < x->q.index)) x = y;
        }
        if (!x) break;
        take = x->q.req.n_ids - x->fed < b->chunk - n ? x->q.req.n_ids - x->fed : b->chunk - n;
        for (j = 0; j < take; j++, n++) {
            codi__row_f32(b->embeds + (size_t)n * D, &m->w.embed, x->q.req.ids[x->fed + j]);
            b->rows[n].s = x->s; b->rows[n].pos = x->s->n_pos + j; b->row_run[n] = (int)(x - b->runs);
            b->rows[n].no_logits = x->fed + j + 1 < x->q.req.n_ids;   /* logits at the prompt's last position only */
        }
        x->rows = take;
    }
    return n;
}

/* Removes the rows of runs that failed in the last pass (and fails them); returns the rows left. */
static int codi__batch_drop_failed(codi_batch *b, int n) {
    int i, w = 0, D = b->m->config.dim, any = 0;
    for (i = 0; i < n; i++) any |= b->rows[i].s->error[0] != 0;
    for (i = 0; i < n; i++) {
        codi__batch_run *x = &b->runs[b->row_run[i]];
        if (!any || x->s->error[0]) {                      /* no state said why: every run of the pass fails */
            if (x->stage != CODI__RUN_DONE) codi__batch_fail(x, "the batched pass failed");
            x->rows = 0;
            continue;
        }
        if (w != i) {
            b->rows[w] = b->rows[i]; b->row_run[w] = b->row_run[i];
            memcpy(b->embeds + (size_t)w * D, b->embeds + (size_t)i * D, (size_t)D * sizeof(float));
        }
        w++;
    }
    return w;
}

CODI_API int codi_batch_step(codi_batch *b, codi_batch_done_fn done, void *user) {
    const codi_model *m = b->m;
    codi__state_internal *si = (codi__state_internal *)b->scratch->internal;
    int i, n;
    b->error[0] = 0;
    for (i = 0; i < b->max_runs && b->q_head < b->q_n; i++)         /* 1. queued runs join free slots */
        if (b->runs[i].stage == CODI__RUN_FREE) {
            codi__batch_start(b, &b->runs[i], &b->queue[b->q_head]);
            b->queue[b->q_head++].ids = NULL;                       /* owned by the slot now */
            b->n_active++;
        }
    n = codi__batch_gather(b);                                      /* 2.-3. the rows, phases and steps */
    while (n > 0) {                                                 /* 4. one pass (again without runs a hook failed) */
        for (i = 0; i < n; i++) b->rows[i].s->error[0] = 0;
        if (codi__forward_rows(m, si, b->rows, n, NULL, b->embeds, NULL, 2) == 0) break;
        n = codi__batch_drop_failed(b, n);
    }
    for (i = 0; i < b->max_runs; i++)                               /* 5. each run moves on */
        if (b->runs[i].rows) codi__batch_advance(m, &b->runs[i]);
    for (i = 0; i < b->max_runs; i++) {                             /* 6. ended runs leave */
        codi__batch_run *x = &b->runs[i];
        codi_batch_result res;
        int rc;
        if (x->stage != CODI__RUN_DONE) continue;
        res.user = x->q.req.user; res.index = x->q.index; res.status = x->status;
        res.error = x->status ? x->s->error : ""; res.result = &x->r; res.state = x->s;
        x->stage = CODI__RUN_FREE; b->n_active--;
        rc = done ? done(user, &res) : 0;
        codi_state_clear_hooks(x->s);
        if (rc) { codi__err(b->error, sizeof b->error, "the done callback stopped the batch (code %d)", rc); return -1; }
    }
    return codi_batch_pending(b);
}

CODI_API int codi_batch_run(codi_batch *b, codi_batch_done_fn done, void *user) {
    int left;
    while ((left = codi_batch_step(b, done, user)) > 0) {}
    return left < 0 ? -1 : 0;
}

#endif /* CODI_LENS_IMPLEMENTATION_DONE */
#endif /* CODI_LENS_IMPLEMENTATION */
