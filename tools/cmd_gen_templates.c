/* codi gen-templates: the template evaluation set of the Latent Reasoning Sprint, in our own words:
   ten templates, each with 50 (X, Y, Z) draws, each draw written as an addition and as a
   subtraction problem: 1,000 questions with answer (X + Y) * (Z + 1) or (X - Y) * (Z + 1).
   X, Y, Z are uniform in 1..8 with X > Y (pairs with X <= Y are drawn again), from codi_rng
   (SplitMix64) seeded with --seed; data/templates.jsonl is the output for seed 42.
   Part of the unity build of tools/codi.c (prefix gen_templates_). */

/* Each template: the start (X), the change (Y: addition, subtraction), the multiplier (Z more each
   X +/- Y), and the nouns of Y and Z (singular, plural). */
typedef struct { const char *start, *add, *sub, *tail, *y_noun[2], *z_noun[2]; } gen_templates_t;
static const gen_templates_t gen_templates_all[10] = {
    { "A team starts with %d members.", " The team gains %d more %s.", " The team loses %d %s.",
      " Then each member recruits %d new %s. How many members does the team have now?", { "member", "members" }, { "member", "members" } },
    { "A gardener plants %d seedlings.", " She plants %d more %s.", " She pulls out %d %s.",
      " Later each seedling sends up %d new %s. How many plants are there now?", { "seedling", "seedlings" }, { "plant", "plants" } },
    { "A chess club has %d players.", " It signs up %d new %s.", " It loses %d %s.",
      " Then each player brings in %d new %s. How many players does the club have now?", { "player", "players" }, { "player", "players" } },
    { "A farmer has %d hens.", " He buys %d more %s.", " He sells %d %s.",
      " Then each hen hatches %d %s. How many birds does the farmer have now?", { "hen", "hens" }, { "chick", "chicks" } },
    { "A bus leaves the depot with %d passengers.", " At the first stop it picks up %d more %s.", " At the first stop it drops off %d %s.",
      " At the second stop each passenger is joined by %d %s. How many passengers are on the bus?", { "passenger", "passengers" }, { "friend", "friends" } },
    { "A class has %d students.", " It gains %d %s by transfer.", " It loses %d %s by transfer.",
      " For the school fair each student invites %d %s. How many students and guests come to the fair?", { "student", "students" }, { "guest", "guests" } },
    { "An aquarium has %d fish.", " The keeper adds %d more %s.", " The keeper takes out %d %s.",
      " Then each fish has %d %s. How many fish are in the aquarium?", { "fish", "fish" }, { "baby", "babies" } },
    { "A startup has %d engineers.", " It hires %d more %s.", " It lets go of %d %s.",
      " Then each engineer hires %d %s. How many people work at the startup now?", { "engineer", "engineers" }, { "assistant", "assistants" } },
    { "A hiking group has %d hikers.", " At the trailhead it picks up %d more %s.", " At the trailhead it sends back %d %s.",
      " Then each hiker brings along %d %s. How many people are walking now?", { "hiker", "hikers" }, { "friend", "friends" } },
    { "A dish holds %d cells.", " The lab adds %d more %s.", " The lab removes %d %s.",
      " Then each cell splits off %d new %s. How many cells are in the dish?", { "cell", "cells" }, { "cell", "cells" } },
};

static int gen_templates_uniform8(codi_rng *r) { return 1 + (int)(codi_rng_uniform(r) * 8); }

static int gen_templates_run(const cli_command *self, int argc, char **argv) {
    const char *out = NULL;
    int seed = 42, draws = 50, t, d, op, rc, force = 0;
    cli_opt opts[] = {
        { "--out", CLI_STR, &out, 0, 0, "FILE.jsonl", "where to write the questions (default: stdout)" },
        { "--seed", CLI_INT, &seed, 0, 2147483647, "S", "seed of the (X, Y, Z) draws (default 42)" },
        { "--draws", CLI_INT, &draws, 1, 100000, "N", "draws per template (default 50)" },
        CLI_FORCE_OPT(&force),
        CLI_END
    };
    codi_rng rng;
    FILE *f = stdout;
    if ((rc = cli_parse(self, opts, argc, argv)) != CLI_OK) return rc == CLI_HELP ? 0 : 2;
    if (out && cli_out_check("gen-templates", out, CLI_OUT_STREAM, force, NULL, 0)) return 2;
    if (out && !(f = cli_out_open(out, "w"))) return 1;
    codi_rng_seed(&rng, (uint64_t)seed);
    for (t = 0; t < 10; t++)
        for (d = 0; d < draws; d++) {
            int x, y, z;
            do { x = gen_templates_uniform8(&rng); y = gen_templates_uniform8(&rng); z = gen_templates_uniform8(&rng); } while (x <= y);
            for (op = 0; op < 2; op++) {
                const gen_templates_t *g = &gen_templates_all[t];
                char q[512];
                int n = snprintf(q, sizeof q, g->start, x);
                n += snprintf(q + n, sizeof q - (size_t)n, op ? g->sub : g->add, y, g->y_noun[y > 1]);
                snprintf(q + n, sizeof q - (size_t)n, g->tail, z, g->z_noun[z > 1]);
                fprintf(f, "{\"question\": \"%s\", \"answer\": %d, \"template\": %d, \"op\": \"%s\", \"x\": %d, \"y\": %d, \"z\": %d}\n",
                        q, (op ? x - y : x + y) * (z + 1), t, op ? "subtraction" : "addition", x, y, z);
            }
        }
    if (out && cli_out_close(f)) return 1;
    return 0;
}

static const cli_command cmd_gen_templates = {
    "gen-templates", "write the template evaluation set (10 templates x 50 draws x {addition, subtraction})",
    "codi gen-templates [--out FILE.jsonl] [--seed S] [--draws N]",
    "Writes the Latent Reasoning Sprint's kind of evaluation set in our own words: ten templates, each with\n"
    "N (X, Y, Z) draws (X, Y, Z uniform in 1..8, X > Y; SplitMix64 seeded with S), each draw as an addition\n"
    "and a subtraction problem with answer (X + Y) * (Z + 1) or (X - Y) * (Z + 1). One JSON line per\n"
    "question: question, answer, template, op, x, y, z. data/templates.jsonl is the output of seed 42.\n\n"
    "Examples:\n"
    "  codi gen-templates --out data/templates.jsonl\n"
    "  codi gen-templates --seed 7 --draws 5 | head",
    gen_templates_run
};
