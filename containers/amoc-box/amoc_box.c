/*
 * amoc-box -- Cessi's (1994) stochastic box model of the AMOC, speaking TAMS file protocol v1.
 *
 *   y_{s+1} = y_s + dt*(pbar - y_s*(1 + mu2*(1 - y_s)^2)) + sigma*sqrt(dt)*xi_s
 *
 * y is the (scaled) meridional salinity difference; observables are q = 1 - y and y.
 *
 * Usage:  amoc-box REQUEST.nml          run one segment (cwd = the segment directory)
 *         amoc-box --roots [MU2 PBAR]   print the equilibria y_on, y_mid, y_off and exit
 *
 * The request is read from the Fortran namelist file with a small hand-written parser
 * (groups &segment and &parameters; `key = value` items separated by commas/newlines;
 * single- or double-quoted strings with doubled quotes as escapes; `!` comments; Fortran
 * `d` exponents).  Keys are case-insensitive; unknown keys are ignored.
 * See README.md and docs/protocol.md.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("amoc-box: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

/* ------------------------------------------------------------------ namelist parser */

#define MAX_ITEMS 256
#define KEY_LEN 64
#define VAL_LEN 4096

struct item { char group[KEY_LEN]; char key[KEY_LEN]; char val[VAL_LEN]; };
static struct item items[MAX_ITEMS];
static int n_items;

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open request %s: %s", path, strerror(errno));
    size_t cap = 8192, n = 0;
    char *buf = malloc(cap);
    size_t got;
    while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    if (!buf) die("out of memory");
    if (ferror(f)) die("cannot read request %s", path);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int is_name_char(int c) { return isalnum(c) || c == '_' || c == '%'; }

static void parse_nml(const char *path)
{
    char *text = read_file(path);
    const char *p = text;
    char group[KEY_LEN] = "";
    int line = 1;
    for (;;) {
        while (*p && (isspace((unsigned char)*p) || *p == ',')) { if (*p == '\n') line++; p++; }
        if (!*p) break;
        if (*p == '!') { while (*p && *p != '\n') p++; continue; }
        if (*p == '&' || *p == '$') {                 /* group start (or &end) */
            p++;
            size_t k = 0;
            while (is_name_char((unsigned char)*p)) {
                if (k + 1 < KEY_LEN) group[k++] = (char)tolower((unsigned char)*p);
                p++;
            }
            group[k] = '\0';
            if (strcmp(group, "end") == 0) group[0] = '\0';
            continue;
        }
        if (*p == '/') { group[0] = '\0'; p++; continue; }
        if (!is_name_char((unsigned char)*p))
            die("%s:%d: unexpected character '%c'", path, line, *p);
        if (!group[0]) die("%s:%d: key outside of a &group", path, line);
        if (n_items == MAX_ITEMS) die("%s: too many items", path);
        struct item *it = &items[n_items];
        size_t k = 0;
        while (is_name_char((unsigned char)*p)) {
            if (k + 1 >= KEY_LEN) die("%s:%d: key too long", path, line);
            it->key[k++] = (char)tolower((unsigned char)*p++);
        }
        it->key[k] = '\0';
        strcpy(it->group, group);
        while (*p == ' ' || *p == '\t') p++;
        if (*p != '=') die("%s:%d: expected '=' after %s", path, line, it->key);
        p++;
        while (*p && isspace((unsigned char)*p)) { if (*p == '\n') line++; p++; }
        k = 0;
        if (*p == '\'' || *p == '"') {
            char q = *p++;
            for (;;) {
                if (!*p) die("%s:%d: unterminated string for %s", path, line, it->key);
                if (*p == q) {
                    if (p[1] == q) p++;               /* doubled quote = literal quote */
                    else { p++; break; }
                }
                if (k + 1 >= VAL_LEN) die("%s:%d: value too long for %s", path, line, it->key);
                it->val[k++] = *p++;
            }
        } else {
            while (*p && !isspace((unsigned char)*p) && *p != ',' && *p != '/' && *p != '!') {
                if (k + 1 >= VAL_LEN) die("%s:%d: value too long for %s", path, line, it->key);
                it->val[k++] = *p++;
            }
            if (k == 0) die("%s:%d: empty value for %s", path, line, it->key);
        }
        it->val[k] = '\0';
        n_items++;
    }
    free(text);
}

static const char *lookup(const char *group, const char *key)
{
    const char *v = NULL;                            /* the last occurrence wins, as in Fortran */
    for (int i = 0; i < n_items; i++)
        if (!strcmp(items[i].group, group) && !strcmp(items[i].key, key)) v = items[i].val;
    return v;
}

static const char *get_str(const char *group, const char *key, const char *dflt)
{
    const char *v = lookup(group, key);
    if (!v) {
        if (!dflt) die("&%s: missing key %s", group, key);
        return dflt;
    }
    return v;
}

static long long get_int(const char *group, const char *key)
{
    const char *v = get_str(group, key, NULL);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) die("&%s: %s = %s is not an integer", group, key, v);
    return x;
}

static double get_real(const char *group, const char *key, const char *dflt)
{
    const char *v = get_str(group, key, dflt);
    char buf[128], *end;
    size_t n = strlen(v);
    if (n >= sizeof buf) die("&%s: %s = %s is not a number", group, key, v);
    for (size_t i = 0; i <= n; i++)                  /* Fortran 1.0d-3 -> 1.0e-3 */
        buf[i] = (v[i] == 'd' || v[i] == 'D') ? 'e' : v[i];
    errno = 0;
    double x = strtod(buf, &end);
    if (errno == ERANGE || end == buf || *end || !isfinite(x))
        die("&%s: %s = %s is not a finite number", group, key, v);
    return x;
}

/* ------------------------------------------------------------------ seed-mode noise */
/* splitmix64 seeds xoshiro256**; Marsaglia's polar method turns 53-bit uniforms into
 * standard normals (pairs, the second kept for the next draw).  The Fortran example
 * (containers/doublewell2d) implements the same generator bit for bit. */

static uint64_t rng_s[4];
static int have_spare;
static double spare;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static void rng_seed(uint64_t seed)
{
    for (int i = 0; i < 4; i++) rng_s[i] = splitmix64(&seed);
    have_spare = 0;
}

static uint64_t next_u64(void)
{
    uint64_t result = rotl(rng_s[1] * 5, 7) * 9;
    uint64_t t = rng_s[1] << 17;
    rng_s[2] ^= rng_s[0];
    rng_s[3] ^= rng_s[1];
    rng_s[1] ^= rng_s[2];
    rng_s[0] ^= rng_s[3];
    rng_s[2] ^= t;
    rng_s[3] = rotl(rng_s[3], 45);
    return result;
}

static double uniform(void) { return (double)(next_u64() >> 11) * 0x1p-53; }   /* [0, 1) */

static double rng_normal(void)
{
    if (have_spare) { have_spare = 0; return spare; }
    double u, v, q;
    do {
        u = 2.0 * uniform() - 1.0;
        v = 2.0 * uniform() - 1.0;
        q = u * u + v * v;
    } while (!(q > 0.0 && q < 1.0));
    double f = sqrt(-2.0 * log(q) / q);
    spare = v * f;
    have_spare = 1;
    return u * f;
}

/* ------------------------------------------------------------------ the model */

static double g(double y, double mu2, double pbar) { return y * (1.0 + mu2 * (1.0 - y) * (1.0 - y)) - pbar; }

/* bisection for a root of g in [a, b] with g(a) <= 0 <= g(b) or the reverse */
static double bisect(double a, double b, double mu2, double pbar)
{
    double ga = g(a, mu2, pbar);
    for (int i = 0; i < 200; i++) {
        double m = 0.5 * (a + b);
        if (m == a || m == b) break;
        double gm = g(m, mu2, pbar);
        if (gm == 0.0) return m;
        if ((gm < 0.0) == (ga < 0.0)) { a = m; ga = gm; } else b = m;
    }
    return 0.5 * (a + b);
}

/* Equilibria: roots of g(y) = y*(1 + mu2*(1-y)^2) - pbar.  g is a cubic with g -> -inf at
 * -inf; it is monotone unless mu2 > 3, when it has a local max at c1 and a local min at c2.
 * Every root is found by bisection on a bracket where g changes sign. */
static int equilibria(double mu2, double pbar, double *y_on, double *y_mid, double *y_off)
{
    double lo = -1.0, hi = 2.0;
    while (g(lo, mu2, pbar) > 0.0) lo = 2.0 * lo - 1.0;
    while (g(hi, mu2, pbar) < 0.0) hi = 2.0 * hi + 1.0;
    if (mu2 > 3.0) {
        double d = sqrt(4.0 * mu2 * (mu2 - 3.0));     /* g'(y) = 3 mu2 y^2 - 4 mu2 y + 1 + mu2 */
        double c1 = (4.0 * mu2 - d) / (6.0 * mu2), c2 = (4.0 * mu2 + d) / (6.0 * mu2);
        double g1 = g(c1, mu2, pbar), g2 = g(c2, mu2, pbar);
        if (g1 > 0.0 && g2 < 0.0) {                   /* three distinct roots: bistable */
            *y_on = bisect(lo, c1, mu2, pbar);
            *y_mid = bisect(c1, c2, mu2, pbar);
            *y_off = bisect(c2, hi, mu2, pbar);
            return 3;
        }
        double r = (g1 <= 0.0) ? bisect(c2, hi, mu2, pbar) : bisect(lo, c1, mu2, pbar);
        *y_on = *y_mid = *y_off = r;
        return 1;
    }
    *y_on = *y_mid = *y_off = bisect(lo, hi, mu2, pbar);
    return 1;
}

static void write_checkpoint(const char *name, double y)
{
    FILE *f = fopen(name, "wb");
    if (!f) die("cannot create checkpoint %s: %s", name, strerror(errno));
    if (fwrite(&y, sizeof y, 1, f) != 1 || fclose(f) != 0)
        die("cannot write checkpoint %s: %s", name, strerror(errno));
}

int main(int argc, char **argv)
{
    const double one = 1.0;
    if (*(const unsigned char *)&one != 0) die("this program assumes a little-endian host");

    if (argc >= 2 && !strcmp(argv[1], "--roots")) {
        double mu2 = argc >= 3 ? atof(argv[2]) : 6.2, pbar = argc >= 4 ? atof(argv[3]) : 1.1;
        double a, b, c;
        int n = equilibria(mu2, pbar, &a, &b, &c);
        printf("mu2 = %.17g\npbar = %.17g\n", mu2, pbar);
        if (n == 3) printf("y_on = %.17g\ny_mid = %.17g\ny_off = %.17g\n", a, b, c);
        else printf("single equilibrium y = %.17g (not bistable)\n", a);
        return 0;
    }
    if (argc != 2) die("usage: amoc-box REQUEST.nml | amoc-box --roots [MU2 PBAR]");

    parse_nml(argv[1]);
    const char *S = "segment", *P = "parameters";
    if (get_int(S, "protocol_version") != 1) die("unsupported protocol_version (this model speaks 1)");
    const char *state_in = get_str(S, "state_in", "");
    long long step0 = get_int(S, "step0");
    long long n_steps = get_int(S, "n_steps");
    double dt = get_real(S, "dt", NULL);
    long long every = get_int(S, "checkpoint_every");
    const char *ck_prefix = get_str(S, "checkpoint_prefix", NULL);
    long long ck_digits = get_int(S, "checkpoint_digits");
    const char *ck_suffix = get_str(S, "checkpoint_suffix", NULL);
    const char *noise_mode = get_str(S, "noise_mode", NULL);
    const char *noise_file = get_str(S, "noise_file", "");
    long long noise_dim = get_int(S, "noise_dim");
    const char *trace_file = get_str(S, "trace_file", NULL);
    /* optional parts of v1, present only when the campaign uses them */
    const char *trace_format = get_str(S, "trace_format", "text");
    const char *ck_file = get_str(S, "checkpoint_file", "");
    long long state_offset = lookup(S, "state_offset") ? get_int(S, "state_offset") : -1;
    int binary = !strcmp(trace_format, "binary");
    if (!binary && strcmp(trace_format, "text")) die("trace_format must be 'text' or 'binary', not '%s'", trace_format);

    double mu2 = get_real(P, "mu2", "6.2");
    double pbar = get_real(P, "pbar", "1.1");
    double sigma = get_real(P, "sigma", "0.1");

    if (step0 < 0) die("step0 must be >= 0");
    if (n_steps < 1) die("n_steps must be >= 1");
    if (!(dt > 0.0)) die("dt must be > 0");
    if (every < 1) die("checkpoint_every must be >= 1");
    if (ck_digits < 1 || ck_digits > 30) die("checkpoint_digits must be in 1..30");
    if (noise_dim != 1) die("noise_dim must be 1 for this model");
    if (!trace_file[0]) die("trace_file is empty");
    if (!(sigma >= 0.0)) die("parameter sigma must be >= 0");

    double y;
    if (!state_in[0]) {
        double y_on, y_mid, y_off;
        equilibria(mu2, pbar, &y_on, &y_mid, &y_off);
        y = lookup(P, "y0") ? get_real(P, "y0", NULL) : y_on;
    } else {
        struct stat st;
        if (stat(state_in, &st) != 0) die("state_in %s: %s", state_in, strerror(errno));
        if (state_offset < 0) {                      /* a file per checkpoint: exactly one state */
            if (st.st_size != (off_t)sizeof(double)) die("state_in %s is not 8 bytes (one float64)", state_in);
            state_offset = 0;
        } else if (state_offset % 8 || state_offset + 8 > (long long)st.st_size) {
            die("state_offset %lld is not a record of state_in %s (%lld bytes)", state_offset,
                state_in, (long long)st.st_size);
        }
        FILE *f = fopen(state_in, "rb");
        if (!f || fseek(f, (long)state_offset, SEEK_SET) != 0 || fread(&y, sizeof y, 1, f) != 1)
            die("cannot read state_in %s", state_in);
        fclose(f);
    }

    double *noise = NULL;
    if (!strcmp(noise_mode, "file")) {
        struct stat st;
        if (stat(noise_file, &st) != 0) die("noise_file %s: %s", noise_file, strerror(errno));
        if ((long long)st.st_size != 8LL * n_steps * noise_dim)
            die("noise_file %s has %lld bytes, expected 8*n_steps*noise_dim = %lld",
                noise_file, (long long)st.st_size, 8LL * n_steps * noise_dim);
        noise = malloc(sizeof(double) * (size_t)n_steps);
        FILE *f = fopen(noise_file, "rb");
        if (!noise || !f || fread(noise, sizeof(double), (size_t)n_steps, f) != (size_t)n_steps)
            die("cannot read noise_file %s", noise_file);
        fclose(f);
    } else if (!strcmp(noise_mode, "seed")) {
        long long seed = get_int(S, "seed");
        if (seed < 0) die("seed must be >= 0");
        rng_seed((uint64_t)seed);
    } else {
        die("noise_mode must be 'file' or 'seed', not '%s'", noise_mode);
    }

    FILE *trace = fopen(trace_file, binary ? "wb" : "w");
    if (!trace) die("cannot create trace_file %s: %s", trace_file, strerror(errno));
    FILE *ckf = NULL;                                /* checkpoint_file: every checkpoint here */
    if (ck_file[0] && !(ckf = fopen(ck_file, "wb")))
        die("cannot create checkpoint_file %s: %s", ck_file, strerror(errno));
    char name[VAL_LEN + 64];
    const double amp = sigma * sqrt(dt);
    for (long long i = 1; i <= n_steps; i++) {
        double xi = noise ? noise[i - 1] : rng_normal();
        y = y + dt * (pbar - y * (1.0 + mu2 * (1.0 - y) * (1.0 - y))) + amp * xi;
        long long step = step0 + i;
        if (binary) {                                /* rows of float64: step, time, q, y */
            double row[4] = {(double)step, (double)step * dt, 1.0 - y, y};
            if (fwrite(row, sizeof row, 1, trace) != 1) die("cannot write trace_file %s", trace_file);
        } else if (fprintf(trace, "%lld %.17g %.17g %.17g\n", step, (double)step * dt, 1.0 - y, y) < 0) {
            die("cannot write trace_file %s", trace_file);
        }
        if (step % every == 0 || i == n_steps) {
            if (ckf) {
                if (fwrite(&y, sizeof y, 1, ckf) != 1) die("cannot write checkpoint_file %s", ck_file);
            } else {
                snprintf(name, sizeof name, "%s%0*lld%s", ck_prefix, (int)ck_digits, step, ck_suffix);
                write_checkpoint(name, y);
            }
        }
    }
    if (ckf && fclose(ckf) != 0) die("cannot write checkpoint_file %s: %s", ck_file, strerror(errno));
    if (fclose(trace) != 0) die("cannot write trace_file %s: %s", trace_file, strerror(errno));
    free(noise);
    return 0;
}
