/* codi export: the model with LoRA merged, written once, so later loads map it without merging. */

static int export_run(const cli_command *self, int argc, char **argv) {
    cli_model_args ma = cli_model_defaults();
    const char *out = NULL;
    int force = 0;
    cli_opt opts[] = {
        CLI_MODEL_OPTS(&ma),
        { "--merged", CLI_STR, &out, 0, 0, "OUT", "the .safetensors file to write (required)" },
        CLI_FORCE_OPT(&force),
        CLI_END
    };
    char err[256];
    double t0;
    codi_model *m;
    int prc = cli_parse(self, opts, argc, argv);
    if (prc) return prc == CLI_HELP ? 0 : 2;
    if (cli_check_args(self, &ma, NULL)) return 2;
    if (!out) { fprintf(stderr, "codi export: --merged OUT.safetensors is required\n"); return 2; }
    if (!cli_ends_with(out, ".safetensors")) { fprintf(stderr, "codi export: --merged %s: the file name must end in .safetensors\n", out); return 2; }
    {
        const char *in[] = { ma.model, ma.base, ma.tokenizer };
        if (cli_out_check("export", out, CLI_OUT_FILE, force, in, CLI_N(in))) return 2;
    }
    t0 = cli_now();
    if (!(m = cli_load_model(&ma))) return 1;
    fprintf(stderr, "codi: loaded and merged in %.2f s\n", cli_now() - t0);
    if (codi_save_merged(m, out, err, sizeof err)) { fprintf(stderr, "codi: %s\n", err); codi_model_free(m); return 1; }
    fprintf(stderr, "codi: wrote %s (%s weights)\n", out, m->exact ? "f32" : "bf16");
    codi_model_free(m);
    return 0;
}

static const cli_command cmd_export = {
    "export", "write the model with LoRA merged as one .safetensors file (loads without merging)",
    "codi export --model PATH --merged OUT.safetensors [--exact] [--base DIR] [options]",
    "Loads the model (LoRA merged; bf16 weights, or f32 with --exact) and writes it with Hugging Face\n"
    "Llama names plus prj, its config in the file's metadata. Loading OUT gives the same results as\n"
    "loading the original with the same options (load OUT with --exact too if it was written with it).\n\n"
    "Examples:\n"
    "  codi export --model codi_ckpt/pytorch_model.bin --base Llama-3.2-1B-Instruct/ --merged codi_merged.safetensors\n"
    "  codi run --model codi_merged.safetensors --question \"...\"",
    export_run
};
