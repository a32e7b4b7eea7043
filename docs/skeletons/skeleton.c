/* Minimal C model for TAMS file protocol v1 (docs/protocol.md).
 * Model: x_{s+1} = x_s - dt*x_s + sigma*sqrt(dt)*xi_s  (Ornstein-Uhlenbeck), observable x.
 * File noise mode only.  Reads request.json's twin request.nml with a deliberately tiny
 * parser (one `key = value` per line, as the orchestrator writes it; see
 * containers/amoc-box/amoc_box.c for a robust one).
 * Build: gcc -O2 -ffp-contract=off -static -o skeleton-c skeleton.c -lm */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *msg) { fprintf(stderr, "skeleton: %s\n", msg); exit(1); }

static char keys[64][64], vals[64][4096];
static int n;

static const char *get(const char *key, const char *dflt)
{
    for (int i = 0; i < n; i++) if (!strcmp(keys[i], key)) return vals[i];
    if (!dflt) { fprintf(stderr, "skeleton: missing key %s\n", key); exit(1); }
    return dflt;
}

int main(int argc, char **argv)
{
    char line[8192];
    FILE *f = fopen(argc > 1 ? argv[1] : "request.nml", "r");
    if (!f) die("cannot open the request");
    while (fgets(line, sizeof line, f) && n < 64) {    /* "  key = value," -> key, value */
        char *eq = strchr(line, '='), *k = line, *v, *e;
        if (!eq) continue;
        *eq = '\0';
        while (*k == ' ') k++;
        for (e = eq; e > k && e[-1] == ' '; ) *--e = '\0';
        for (v = eq + 1; *v == ' ' || *v == '\''; ) v++;
        for (e = v + strlen(v); e > v && strchr(" \t\r\n,'", e[-1]); ) *--e = '\0';
        snprintf(keys[n], sizeof keys[n], "%.63s", k);
        snprintf(vals[n], sizeof vals[n], "%.4095s", v);
        n++;
    }
    fclose(f);
    if (atoi(get("protocol_version", NULL)) != 1) die("protocol_version must be 1");
    if (strcmp(get("noise_mode", NULL), "file") || atoi(get("noise_dim", NULL)) != 1)
        die("only noise_mode = file, noise_dim = 1");
    long long step0 = atoll(get("step0", NULL)), n_steps = atoll(get("n_steps", NULL));
    long long every = atoll(get("checkpoint_every", NULL));
    int digits = atoi(get("checkpoint_digits", NULL));
    double dt = strtod(get("dt", NULL), NULL);
    double sigma = strtod(get("sigma", "0.5"), NULL), x = strtod(get("x0", "0.0"), NULL);
    const char *state_in = get("state_in", "");
    const char *fmt = get("trace_format", "text"), *ckfile = get("checkpoint_file", "");
    int binary = !strcmp(fmt, "binary");               /* optional parts of v1 (section 5a) */
    if (!binary && strcmp(fmt, "text")) die("trace_format must be text or binary");

    if (state_in[0]) {                                  /* restart from the given checkpoint */
        if (!(f = fopen(state_in, "rb")) || fseek(f, atol(get("state_offset", "0")), SEEK_SET)
            || fread(&x, 8, 1, f) != 1) die("cannot read state_in");
        fclose(f);
    }
    double *noise = malloc(8 * (size_t)n_steps);       /* raw little-endian float64 */
    if (!noise || !(f = fopen(get("noise_file", NULL), "rb"))
        || fread(noise, 8, (size_t)n_steps, f) != (size_t)n_steps) die("cannot read noise_file");
    fclose(f);

    FILE *trace = fopen(get("trace_file", NULL), binary ? "wb" : "w"), *ck = NULL;
    if (!trace) die("cannot create trace_file");
    if (ckfile[0] && !(ck = fopen(ckfile, "wb"))) die("cannot create checkpoint_file");
    char name[8192];
    for (long long i = 1; i <= n_steps; i++) {
        x = x - dt * x + sigma * sqrt(dt) * noise[i - 1];
        long long step = step0 + i;
        double row[3] = {(double)step, (double)step * dt, x};              /* step time obs... */
        if (binary) fwrite(row, 8, 3, trace);
        else fprintf(trace, "%lld %.17g %.17g\n", step, row[1], x);
        if ((step % every == 0 || i == n_steps) && ck) {
            if (fwrite(&x, 8, 1, ck) != 1) die("checkpoint_file");           /* one record each */
        } else if (step % every == 0 || i == n_steps) {
            snprintf(name, sizeof name, "%s%0*lld%s", get("checkpoint_prefix", NULL), digits,
                     step, get("checkpoint_suffix", NULL));
            if (!(f = fopen(name, "wb")) || fwrite(&x, 8, 1, f) != 1 || fclose(f)) die("checkpoint");
        }
    }
    if (fclose(trace) || (ck && fclose(ck))) die("cannot write trace_file or checkpoint_file");
    return 0;
}
