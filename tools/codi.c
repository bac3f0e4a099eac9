/* codi: the command-line face of codi_lens.h. One file per command (tools/cmd_*.c), one option parser
   (tools/cli.h); this file lists the commands and dispatches. Adding a command: write tools/cmd_NAME.c
   defining `static const cli_command cmd_NAME`, include it below and add it to `commands`.
   Exit status: 0 success, 1 the work failed (message on stderr; a failed write to standard output
   included), 2 bad usage. */
#define _POSIX_C_SOURCE 200809L   /* clock_gettime, fileno, sysconf */
#define CODI_LENS_IMPLEMENTATION
#include "../codi_lens.h"
#include "cli.h"

#include "cmd_run.c"
#include "cmd_trace.c"
#include "cmd_info.c"
#include "cmd_bench.c"
#include "cmd_tokenize.c"
#include "cmd_lens.c"
#include "cmd_record.c"
#include "cmd_tune_lens.c"
#include "cmd_eval.c"
#include "cmd_gen_templates.c"
#include "cmd_vectors.c"
#include "cmd_sweep.c"
#include "cmd_export.c"
#include "cmd_pca.c"
#include "cmd_probe.c"
#include "cmd_vectors_extract.c"
#include "cmd_kv_response.c"

static const cli_command *const commands[] = {
    &cmd_run, &cmd_trace, &cmd_info, &cmd_bench, &cmd_tokenize, &cmd_lens, &cmd_record, &cmd_tune_lens,
    &cmd_eval, &cmd_gen_templates, &cmd_vectors, &cmd_sweep, &cmd_export, &cmd_probe, &cmd_pca, &cmd_kv_response,
};
#define N_COMMANDS (int)(sizeof commands / sizeof *commands)

static void codi_usage(FILE *f) {
    int i;
    fprintf(f, "usage: codi COMMAND [options]      (codi COMMAND --help: that command's options and examples)\n\ncommands:\n");
    for (i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-13s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "  %-13s %s\n", "help", "this list, or `codi help COMMAND`");
    fprintf(f, "\nExit status: 0 success, 1 the work failed, 2 bad usage. %s\n", CLI_VERSION);
}

static const cli_command *codi_find_command(const char *name) {
    int i;
    for (i = 0; i < N_COMMANDS; i++) if (!strcmp(commands[i]->name, name)) return commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    const cli_command *cmd;
    int rc;
    if (argc < 2) { codi_usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || (!strcmp(argv[1], "help") && argc == 2)) { codi_usage(stdout); return cli_stdout_check("help") ? 1 : 0; }
    if (!strcmp(argv[1], "--version")) { printf("%s\n", CLI_VERSION); return cli_stdout_check("--version") ? 1 : 0; }
    if (!strcmp(argv[1], "help")) {
        char *help_argv[2];
        if (!(cmd = codi_find_command(argv[2]))) { fprintf(stderr, "codi: unknown command '%s'\n\n", argv[2]); codi_usage(stderr); return 2; }
        help_argv[0] = argv[2]; help_argv[1] = (char *)"--help";
        rc = cmd->run(cmd, 2, help_argv);
        return cli_stdout_check(cmd->name) ? 1 : rc;
    }
    if (!(cmd = codi_find_command(argv[1]))) { fprintf(stderr, "codi: unknown command '%s'\n\n", argv[1]); codi_usage(stderr); return 2; }
    rc = cmd->run(cmd, argc - 1, argv + 1);
    if (cli_stdout_check(cmd->name) && rc != 2) rc = 1;
    if (cli_questions_skipped && rc == 0) {
        fprintf(stderr, "codi %s: %d line%s of the questions skipped (see above): exit status 1\n", cmd->name, cli_questions_skipped, cli_questions_skipped == 1 ? "" : "s");
        rc = 1;
    }
    return rc;
}
