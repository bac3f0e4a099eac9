/* codi info: the config and where every tensor came from. */

static int info_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    cli_opt opts[] = { CLI_MODEL_OPTS(&ma), CLI_END };
    codi_model *m;
    const codi_config *c;
    int i, from_base = 0, n_mat = 0, misaligned;
    static const char *dt[] = { "F32", "BF16", "F16", "I32", "U8", "F64", "I64" };
    int prc = cli_parse(self, opts, argc, argv);
    if (prc) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!(m = cli_load_model(&ma))) return 1;
    c = &m->config;
    printf("layers %d  dim %d  ffn %d  heads %d  kv heads %d  head dim %d  vocab %d  prj %d\n",
           c->n_layers, c->dim, c->ffn_dim, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab, c->prj_dim);
    printf("rope theta %g  llama3 %d (factor %g, low %g, high %g, original %d)  eps %g\n", c->rope_theta, c->rope_llama3,
           c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_pos, c->norm_eps);
    printf("bos %d  eos", c->bos_id);
    for (i = 0; i < c->n_eos; i++) printf(" %d", c->eos_ids[i]);
    printf("  pad %d  bot %d  eot %d  lora scale %g  weights %s\n", c->pad_id, c->bot_id, c->eot_id, c->lora_scale, m->exact ? "f32" : "bf16");
    for (i = 0; i < m->n_tensors; i++) {
        const codi_tensor_info *t = &m->tensors[i];
        int d;
        from_base += t->source;
        printf("%-6s %-5s [", t->source ? "base" : "ckpt", t->dtype >= 0 && t->dtype <= CODI_I64 ? dt[t->dtype] : "other");
        for (d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        printf("] %s\n", t->name);
    }
    printf("%d tensors: %d from the checkpoint, %d from the base\n", m->n_tensors, m->n_tensors - from_base, from_base);
    misaligned = codi_weights_misaligned(m, &n_mat);
    printf("weight matrices 64-byte aligned: %d of %d%s\n", n_mat - misaligned, n_mat,
           misaligned ? " (decode reads misaligned rows ~10% slower; codi export --merged writes an aligned file)" : "");
    codi_model_free(m);
    return 0;
}

static const cli_command cmd_info = {
    "info", "print the model's config and where every tensor came from",
    "codi info --model PATH [--base DIR] [options]",
    "Loads the model and prints its shape, RoPE, special tokens, LoRA scale and every tensor read\n"
    "(checkpoint or base, dtype, shape, canonical name).\n\n"
    "Examples:\n"
    "  codi info --model models/codi-nano/codi_nano.bin\n"
    "  codi info --model pytorch_model.bin --base Llama-3.2-1B-Instruct/",
    info_run
};
