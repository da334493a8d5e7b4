/* train: fits the classifier's logistic model with L-BFGS and reports it on held-out rows.
 *
 * The one design decision: features come from sy_classifier_features on the same request body
 * the proxy would see ({"messages":[{"role":"user","content":<first turn>}]}), and the held-out
 * report scores the written file through sy_classifier_score, so the numbers describe exactly
 * what ships. Full-batch L-BFGS (no sampling) makes the fit deterministic: same data, same
 * flags, same bytes. The seed only moves the held-out split (a hash of seed and row id).
 *
 * Labels: "gain" (default) fits a soft target t = (1 + gain)/2 with gain = (strong - weak)
 * divided by the set's score range, so sigmoid(z) estimates (1 + E[gain])/2 and sorting by it
 * is the order that maximises the recovered performance gap (what route_eval's APGR measures).
 * "needs_strong" fits the 0/1 label; "gain_weighted" fits strong > weak weighted by |gain|. */
#include "switchyard/train.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "switchyard/classifier.h"

#define LINE_MAX_BYTES (8u << 20)
#define LBFGS_M 8
#define MAX_SETS 32

typedef enum label_kind { LABEL_GAIN, LABEL_NEEDS, LABEL_GAIN_WEIGHTED } label_kind;

typedef struct opts {
    const char *data;
    const char *out;
    const char *eval_dir;
    const char *set_weights;
    uint64_t seed;
    uint64_t fold_seed; /* key of the cross-validation folds (default: seed) */
    bool fold_seed_set;
    double holdout;
    int epochs;
    double l2;
    double l2_hashed; /* n-gram weights of open questions */
    double l2_mc;     /* n-gram weights only multiple-choice rows use */
    unsigned hash_bits;
    label_kind label;
    double prune;
    double aux;
    double pairwise; /* weight of the within-set pairwise ranking term (0: off) */
    size_t pairs_max; /* most pairs per set; more are sampled by a hash of the pair */
    double threshold_share;
    double threshold; /* < 0: derive from threshold_share */
    int folds;
    bool quiet;
} opts;

typedef struct row {
    char *id;
    int set;    /* index into trainer.sets */
    char *line; /* the raw data line, for --eval-dir */
    double strong, weak;
    double mean_all; /* mean grade of every graded model ("scores"), NAN when absent */
    double length;   /* bytes of the first turn: route_eval's "length" baseline */
    int needs;
    double target, weight;
    double gain; /* (strong - weak) / the set's score range */
    float dense[SY_CLS_NDENSE];
    uint32_t *idx; /* compact parameter indices (after remap), sorted */
    float *val;
    size_t nnz;
    bool holdout;
    int fold;
} row;

typedef struct trainer {
    opts o;
    row *rows;
    size_t nrows, caprows;
    char *sets[MAX_SETS];
    double set_lo[MAX_SETS], set_hi[MAX_SETS], set_weight[MAX_SETS];
    size_t nsets;
    /* scratch for one row's n-grams */
    uint32_t *tmp_b;
    uint8_t *tmp_k;
    size_t ntmp, captmp;
    bool tmp_oom;
    /* compact parameter space: bias, dense, then every bucket seen in the data */
    int32_t *remap;   /* 2^bits -> compact index or -1 */
    double *l2;       /* per parameter */
    uint32_t *bucket; /* compact hashed index -> bucket */
    size_t nbuckets;
    size_t nparams;
    /* --pairwise: pairs (hi, lo) of non-held-out rows of one set with gain[hi] > gain[lo] */
    struct pair {
        uint32_t hi, lo;
        float w; /* gain[hi] - gain[lo]: what swapping the two costs in recovered gap */
    } *pairs;
    size_t npairs;
    double *z, *d; /* per-row logit and d loss / d logit, scratch of objective() */
} trainer;

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t fnv64(uint64_t h, const char *s)
{
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

double sy_train_split_key(uint64_t seed, unsigned salt, const char *id)
{
    char pre[48];
    uint64_t h = 14695981039346656037ull;
    (void)snprintf(pre, sizeof(pre), "%llu:%u:", (unsigned long long)seed, salt);
    h = fnv64(h, pre);
    h = fnv64(h, id);
    /* FNV's low bits are weak: finish with a 64-bit mixer, keep 53 bits */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

static double sigmoid(double z)
{
    return z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
}

/* log(1 + e^z) without overflow */
static double softplus(double z)
{
    return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z));
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: switchyard train --data A.jsonl[,B.jsonl] --out FILE [options]\n"
            "  --seed N            key of the held-out split and the folds (default 1)\n"
            "  --holdout F         share of rows held out by id hash (default 0.2)\n"
            "  --epochs N          most L-BFGS iterations, each a full pass (default 300)\n"
            "  --l2 X              L2 penalty of the dense weights (default 1e-4)\n"
            "  --l2-hashed X       ... of n-gram weights of open questions (default 1e-2)\n"
            "  --l2-mc X           ... of n-gram weights of multiple-choice questions (3e-3)\n"
            "  --hash-bits B       2^B n-gram buckets (default 18)\n"
            "  --label L           gain (default) | needs_strong | gain_weighted\n"
            "  --aux A             rows with \"scores\": blend share A of (strong - mean of all\n"
            "                      graded models) into the gain (default 0)\n"
            "  --pairwise L        add L x a within-set pairwise ranking loss (default 0)\n"
            "  --pairs-max N       most pairs per set, sampled by hash beyond (default 300000)\n"
            "  --set-weight S=W,.. multiply the weight of the rows of set S (default 1)\n"
            "  --prune X           drop n-gram weights with |w| < X (default 1e-3)\n"
            "  --threshold-share S threshold sending share S of the open (not multiple-\n"
            "                      choice) training rows to the flagship (default 0.5);\n"
            "                      --threshold T fixes it instead\n"
            "  --eval-dir DIR      write held-out rows and their scores per set, in\n"
            "                      route_eval.py format (holdout-SET.jsonl, .scores.jsonl)\n"
            "  --folds K           also K-fold cross-validate on the training rows (cv-SET.*);\n"
            "                      with --holdout 0, a cross-fit of every row\n"
            "  --fold-seed N       key of the folds (default: --seed); the held-out rows stay,\n"
            "                      so repeated cross-validation never looks at them\n"
            "  --quiet             only the reports\n");
}

static bool parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return s[0] != '\0' && *end == '\0' && errno == 0 && isfinite(*out);
}

static bool parse_ull(const char *s, unsigned long long *out)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        return false;
    *out = strtoull(s, &end, 10);
    return *end == '\0' && errno == 0;
}

static int parse_opts(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof(*o));
    o->seed = 1;
    o->holdout = 0.2;
    o->epochs = 300;
    o->l2 = 1e-4;
    o->l2_hashed = 1e-2;
    o->l2_mc = 3e-3;
    o->hash_bits = 18;
    o->label = LABEL_GAIN;
    o->prune = 1e-3;
    o->pairs_max = 300000;
    o->threshold_share = 0.5;
    o->threshold = -1;
    o->folds = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        unsigned long long u;
        double d;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (v == NULL) {
            fprintf(stderr, "train: %s needs a value (or is unknown)\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--data") == 0)
            o->data = v;
        else if (strcmp(a, "--out") == 0)
            o->out = v;
        else if (strcmp(a, "--eval-dir") == 0)
            o->eval_dir = v;
        else if (strcmp(a, "--set-weight") == 0)
            o->set_weights = v;
        else if (strcmp(a, "--seed") == 0 && parse_ull(v, &u))
            o->seed = u;
        else if (strcmp(a, "--fold-seed") == 0 && parse_ull(v, &u)) {
            o->fold_seed = u;
            o->fold_seed_set = true;
        }
        else if (strcmp(a, "--holdout") == 0 && parse_double(v, &d) && d >= 0 && d < 1)
            o->holdout = d;
        else if (strcmp(a, "--epochs") == 0 && parse_ull(v, &u) && u >= 1 && u <= 100000)
            o->epochs = (int)u;
        else if (strcmp(a, "--l2") == 0 && parse_double(v, &d) && d >= 0)
            o->l2 = d;
        else if (strcmp(a, "--l2-hashed") == 0 && parse_double(v, &d) && d >= 0)
            o->l2_hashed = d;
        else if (strcmp(a, "--l2-mc") == 0 && parse_double(v, &d) && d >= 0)
            o->l2_mc = d;
        else if (strcmp(a, "--hash-bits") == 0 && parse_ull(v, &u) && u >= SY_CLS_HASH_BITS_MIN &&
                 u <= SY_CLS_HASH_BITS_MAX)
            o->hash_bits = (unsigned)u;
        else if (strcmp(a, "--prune") == 0 && parse_double(v, &d) && d >= 0)
            o->prune = d;
        else if (strcmp(a, "--pairwise") == 0 && parse_double(v, &d) && d >= 0)
            o->pairwise = d;
        else if (strcmp(a, "--pairs-max") == 0 && parse_ull(v, &u) && u >= 1 && u <= 100000000)
            o->pairs_max = (size_t)u;
        else if (strcmp(a, "--aux") == 0 && parse_double(v, &d) && d >= 0 && d <= 1)
            o->aux = d;
        else if (strcmp(a, "--threshold-share") == 0 && parse_double(v, &d) && d >= 0 && d <= 1)
            o->threshold_share = d;
        else if (strcmp(a, "--threshold") == 0 && parse_double(v, &d) && d >= 0 && d <= 1)
            o->threshold = d;
        else if (strcmp(a, "--folds") == 0 && parse_ull(v, &u) && u <= 100 && u != 1)
            o->folds = (int)u;
        else if (strcmp(a, "--label") == 0 && strcmp(v, "gain") == 0)
            o->label = LABEL_GAIN;
        else if (strcmp(a, "--label") == 0 && strcmp(v, "needs_strong") == 0)
            o->label = LABEL_NEEDS;
        else if (strcmp(a, "--label") == 0 && strcmp(v, "gain_weighted") == 0)
            o->label = LABEL_GAIN_WEIGHTED;
        else {
            fprintf(stderr, "train: bad argument %s %s\n", a, v);
            return 2;
        }
    }
    if (o->data == NULL || o->out == NULL) {
        fprintf(stderr, "train: --data and --out are required\n");
        usage(stderr);
        return 2;
    }
    if (o->folds > 0 && o->eval_dir == NULL) {
        fprintf(stderr, "train: --folds needs --eval-dir\n");
        return 2;
    }
    return -1;
}

/* ---- reading rows ----------------------------------------------------------------------- */

static void emit_collect(void *ctx, sy_cls_kind kind, uint32_t hash, const char *a, size_t alen,
                         const char *b, size_t blen)
{
    trainer *t = ctx;
    if (t->ntmp == t->captmp) {
        size_t cap = t->captmp ? 2 * t->captmp : 4096;
        uint32_t *nb = realloc(t->tmp_b, cap * sizeof(*nb));
        if (nb == NULL) {
            t->tmp_oom = true;
            return;
        }
        t->tmp_b = nb;
        uint8_t *nk = realloc(t->tmp_k, cap * sizeof(*nk));
        if (nk == NULL) {
            t->tmp_oom = true;
            return;
        }
        t->tmp_k = nk;
        t->captmp = cap;
    }
    t->tmp_b[t->ntmp] = hash & ((1u << t->o.hash_bits) - 1);
    t->tmp_k[t->ntmp] = (uint8_t)kind;
    t->ntmp++;
}

typedef struct bv {
    uint32_t b;
    float v;
} bv;

static int bv_cmp(const void *x, const void *y)
{
    const bv *a = x, *b = y;
    return a->b < b->b ? -1 : a->b > b->b;
}

/* Extracts a row's features: dense, and (bucket, value) pairs merged per bucket. */
static int row_features(trainer *t, row *r, const json_t *turn)
{
    sy_cls_features f;
    int rc = 1;
    bv *pairs = NULL;
    json_t *req = json_pack("{s:[{s:s,s:O}]}", "messages", "role", "user", "content", turn);

    if (req == NULL)
        goto out;
    t->ntmp = 0;
    t->tmp_oom = false;
    if (sy_classifier_features(req, &f, emit_collect, t) != SY_OK || t->tmp_oom)
        goto out;
    for (size_t i = 0; i < SY_CLS_NDENSE; i++)
        r->dense[i] = (float)f.dense[i];
    pairs = malloc((t->ntmp ? t->ntmp : 1) * sizeof(*pairs));
    if (pairs == NULL)
        goto out;
    for (size_t i = 0; i < t->ntmp; i++) {
        pairs[i].b = t->tmp_b[i];
        pairs[i].v = (float)f.scale[t->tmp_k[i]];
    }
    qsort(pairs, t->ntmp, sizeof(*pairs), bv_cmp);
    size_t m = 0;
    for (size_t i = 0; i < t->ntmp; i++) {
        if (m > 0 && pairs[m - 1].b == pairs[i].b)
            pairs[m - 1].v += pairs[i].v;
        else
            pairs[m++] = pairs[i];
    }
    r->idx = malloc((m ? m : 1) * sizeof(*r->idx));
    r->val = malloc((m ? m : 1) * sizeof(*r->val));
    if (r->idx == NULL || r->val == NULL)
        goto out;
    for (size_t i = 0; i < m; i++) {
        r->idx[i] = pairs[i].b; /* a bucket until remap() */
        r->val[i] = pairs[i].v;
    }
    r->nnz = m;
    rc = 0;
out:
    free(pairs);
    json_decref(req);
    return rc;
}

static int set_index(trainer *t, const char *name)
{
    for (size_t i = 0; i < t->nsets; i++)
        if (strcmp(t->sets[i], name) == 0)
            return (int)i;
    if (t->nsets == MAX_SETS)
        return -1;
    t->sets[t->nsets] = strdup(name);
    if (t->sets[t->nsets] == NULL)
        return -1;
    t->set_lo[t->nsets] = INFINITY;
    t->set_hi[t->nsets] = -INFINITY;
    t->set_weight[t->nsets] = 1;
    return (int)t->nsets++;
}

static int read_line_row(trainer *t, const char *file, size_t lineno, const char *line, size_t len)
{
    json_error_t jerr;
    int rc = 1;
    json_t *j = json_loadb(line, len, 0, &jerr);
    const json_t *turns, *turn, *id, *set;
    double strong, weak;
    row *r;

    if (j == NULL) {
        fprintf(stderr, "train: %s:%zu: %s\n", file, lineno, jerr.text);
        goto out;
    }
    id = json_object_get(j, "id");
    set = json_object_get(j, "set");
    turns = json_object_get(j, "turns");
    turn = json_array_get(turns, 0);
    if (!json_is_string(id) || !json_is_string(turn) ||
        !json_is_number(json_object_get(j, "strong")) ||
        !json_is_number(json_object_get(j, "weak"))) {
        fprintf(stderr, "train: %s:%zu: a row needs id, turns[0], strong and weak\n", file, lineno);
        goto out;
    }
    strong = json_number_value(json_object_get(j, "strong"));
    weak = json_number_value(json_object_get(j, "weak"));
    if (t->nrows == t->caprows) {
        size_t cap = t->caprows ? 2 * t->caprows : 1024;
        row *nr = realloc(t->rows, cap * sizeof(*nr));
        if (nr == NULL)
            goto oom;
        t->rows = nr;
        t->caprows = cap;
    }
    r = &t->rows[t->nrows];
    memset(r, 0, sizeof(*r));
    r->set = set_index(t, json_is_string(set) ? json_string_value(set) : "all");
    r->id = strdup(json_string_value(id));
    r->line = strndup(line, len);
    if (r->set < 0 || r->id == NULL || r->line == NULL)
        goto oom_row;
    r->strong = strong;
    r->weak = weak;
    r->length = (double)json_string_length(turn);
    r->mean_all = NAN;
    {
        const json_t *scores = json_object_get(j, "scores"), *sv;
        const char *k;
        double sum = 0;
        size_t cnt = 0;
        json_object_foreach ((json_t *)scores, k, sv) {
            if (json_is_number(sv)) {
                sum += json_number_value(sv);
                cnt++;
            }
        }
        if (cnt >= 3)
            r->mean_all = sum / (double)cnt;
    }
    r->needs = json_is_integer(json_object_get(j, "needs_strong"))
                   ? (int)json_integer_value(json_object_get(j, "needs_strong"))
                   : strong > weak;
    if (row_features(t, r, turn) != 0)
        goto oom_row;
    r->holdout = sy_train_split_key(t->o.seed, 0, r->id) < t->o.holdout;
    if (t->o.folds > 0)
        r->fold = (int)(sy_train_split_key(t->o.fold_seed_set ? t->o.fold_seed : t->o.seed, 1,
                                           r->id) *
                        t->o.folds);
    t->nrows++;
    rc = 0;
    goto out;
oom_row:
    free(r->id);
    free(r->line);
    free(r->idx);
    free(r->val);
oom:
    fprintf(stderr, "train: out of memory\n");
out:
    json_decref(j);
    return rc;
}

static int read_file(trainer *t, const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 1;

    if (f == NULL) {
        fprintf(stderr, "train: %s: %s\n", path, strerror(errno));
        goto out;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)n > LINE_MAX_BYTES) {
            fprintf(stderr, "train: %s:%zu: line longer than %u bytes\n", path, lineno,
                    LINE_MAX_BYTES);
            goto out;
        }
        size_t len = (size_t)n;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '))
            len--;
        if (len == 0)
            continue;
        if (read_line_row(t, path, lineno, line, len) != 0)
            goto out;
    }
    if (ferror(f)) {
        fprintf(stderr, "train: %s: read error\n", path);
        goto out;
    }
    rc = 0;
out:
    free(line);
    if (f != NULL)
        (void)fclose(f);
    return rc;
}

static int read_data(trainer *t)
{
    char *list = strdup(t->o.data), *save = NULL;
    int rc = 1;

    if (list == NULL)
        goto out;
    for (char *p = strtok_r(list, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save))
        if (read_file(t, p) != 0)
            goto out;
    if (t->nrows == 0) {
        fprintf(stderr, "train: no rows in %s\n", t->o.data);
        goto out;
    }
    rc = 0;
out:
    free(list);
    return rc;
}

/* Set weights "mmlu=1,arena=4". */
static int apply_set_weights(trainer *t)
{
    if (t->o.set_weights == NULL)
        return 0;
    char *list = strdup(t->o.set_weights), *save = NULL;
    int rc = 1;
    if (list == NULL)
        goto out;
    for (char *p = strtok_r(list, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(p, '=');
        double w;
        if (eq == NULL || !parse_double(eq + 1, &w) || w < 0) {
            fprintf(stderr, "train: --set-weight: bad item '%s' (want SET=W)\n", p);
            goto out;
        }
        *eq = '\0';
        for (size_t i = 0; i < t->nsets; i++)
            if (strcmp(t->sets[i], p) == 0)
                t->set_weight[i] = w;
    }
    rc = 0;
out:
    free(list);
    return rc;
}

/* Targets and weights from the label kind; the gain is scaled by the set's score range. */
static void make_targets(trainer *t)
{
    for (size_t i = 0; i < t->nrows; i++) {
        row *r = &t->rows[i];
        double lo = fmin(r->strong, r->weak), hi = fmax(r->strong, r->weak);
        if (lo < t->set_lo[r->set])
            t->set_lo[r->set] = lo;
        if (hi > t->set_hi[r->set])
            t->set_hi[r->set] = hi;
    }
    for (size_t i = 0; i < t->nrows; i++) {
        row *r = &t->rows[i];
        double range = t->set_hi[r->set] - t->set_lo[r->set];
        double g = range > 0 ? (r->strong - r->weak) / range : 0;
        /* rows graded for many models: blend in how far the flagship is above the field,
         * a less noisy measure of difficulty than one pair */
        if (!isnan(r->mean_all) && range > 0)
            g = (1 - t->o.aux) * g + t->o.aux * (r->strong - r->mean_all) / range;
        r->gain = g;
        switch (t->o.label) {
        case LABEL_NEEDS:
            r->target = r->needs != 0;
            r->weight = 1;
            break;
        case LABEL_GAIN_WEIGHTED:
            r->target = g > 0;
            r->weight = fabs(g) + 0.05;
            break;
        default:
            r->target = (1.0 + g) / 2.0;
            r->weight = 1;
            break;
        }
        r->weight *= t->set_weight[r->set];
    }
}

/* Maps buckets seen in the data to a compact parameter index. */
static int remap(trainer *t)
{
    size_t nb = (size_t)1 << t->o.hash_bits;
    t->remap = malloc(nb * sizeof(*t->remap));
    t->bucket = malloc(nb * sizeof(*t->bucket));
    if (t->remap == NULL || t->bucket == NULL)
        return 1;
    for (size_t b = 0; b < nb; b++)
        t->remap[b] = -1;
    for (size_t i = 0; i < t->nrows; i++)
        for (size_t k = 0; k < t->rows[i].nnz; k++)
            t->remap[t->rows[i].idx[k]] = 0;
    for (size_t b = 0; b < nb; b++)
        if (t->remap[b] == 0) {
            t->remap[b] = (int32_t)(1 + SY_CLS_NDENSE + t->nbuckets);
            t->bucket[t->nbuckets++] = (uint32_t)b;
        }
    for (size_t i = 0; i < t->nrows; i++)
        for (size_t k = 0; k < t->rows[i].nnz; k++)
            t->rows[i].idx[k] = (uint32_t)t->remap[t->rows[i].idx[k]];
    t->nparams = 1 + SY_CLS_NDENSE + t->nbuckets;
    /* the penalty of each parameter: dense, hashed, or hashed and seen only in multiple-choice
     * rows (their n-grams hash into their own space, see classifier.c) */
    t->l2 = malloc(t->nparams * sizeof(*t->l2));
    if (t->l2 == NULL)
        return 1;
    double l2h = t->o.l2_hashed, l2mc = t->o.l2_mc;
    for (size_t j = 0; j < t->nparams; j++)
        t->l2[j] = j == 0 ? 0 : j <= SY_CLS_NDENSE ? t->o.l2 : -1;
    for (size_t i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        bool open = r->dense[SY_CLS_D_open] != 0;
        for (size_t k = 0; k < r->nnz; k++)
            if (open || t->l2[r->idx[k]] < 0)
                t->l2[r->idx[k]] = open ? l2h : l2mc;
    }
    return 0;
}

/* ---- the fit ---------------------------------------------------------------------------- */

static double row_logit(const row *r, const double *x)
{
    double z = x[0];
    for (size_t i = 0; i < SY_CLS_NDENSE; i++)
        z += x[1 + i] * r->dense[i];
    for (size_t k = 0; k < r->nnz; k++)
        z += x[r->idx[k]] * r->val[k];
    return z;
}

/* A training subset: rows where in(row) holds. */
typedef struct subset {
    const trainer *t;
    int fold; /* -1: all non-holdout rows; else the non-holdout rows of other folds */
} subset;

static bool in_subset(const subset *s, const row *r)
{
    return !r->holdout && (s->fold < 0 || r->fold != s->fold);
}

/* The within-set pairwise term: for each pair (hi, lo) of rows of one set in the subset,
 * c x softplus(z_lo - z_hi) with c = L x (the set's share of the row weight) x w / (the set's
 * total pair weight in the subset), so a set counts as much as in the pointwise term and a
 * pair as much as swapping it costs. APGR only ranks rows within a set; this term asks for
 * exactly that, while the pointwise term also has to place the sets against each other. */
static double pair_term(const subset *s, double wsum, double *d)
{
    const trainer *t = s->t;
    double ws[MAX_SETS] = {0}, pw[MAX_SETS] = {0}, loss = 0;
    for (size_t i = 0; i < t->nrows; i++)
        if (in_subset(s, &t->rows[i]))
            ws[t->rows[i].set] += t->rows[i].weight / wsum;
    for (size_t p = 0; p < t->npairs; p++) {
        const struct pair *q = &t->pairs[p];
        if (in_subset(s, &t->rows[q->hi]) && in_subset(s, &t->rows[q->lo]))
            pw[t->rows[q->hi].set] += q->w;
    }
    for (size_t p = 0; p < t->npairs; p++) {
        const struct pair *q = &t->pairs[p];
        int set = t->rows[q->hi].set;
        if (!in_subset(s, &t->rows[q->hi]) || !in_subset(s, &t->rows[q->lo]))
            continue;
        double c = t->o.pairwise * ws[set] * q->w / pw[set];
        double u = t->z[q->hi] - t->z[q->lo];
        loss += c * softplus(-u);
        double dd = -c * sigmoid(-u);
        d[q->hi] += dd;
        d[q->lo] -= dd;
    }
    return loss;
}

/* Objective: weighted mean log loss (plus the pairwise term) plus l2/2 |w|^2 (bias excluded).
 * Gradient into <g>. */
static double objective(const subset *s, const double *x, double *g)
{
    const trainer *t = s->t;
    size_t n = t->nparams;
    double loss = 0, wsum = 0;

    memset(g, 0, n * sizeof(*g));
    for (size_t i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        if (in_subset(s, r))
            wsum += r->weight;
    }
    if (wsum <= 0)
        wsum = 1;
    for (size_t i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        t->d[i] = 0;
        if (!in_subset(s, r))
            continue;
        double z = row_logit(r, x);
        double w = r->weight / wsum;
        t->z[i] = z;
        loss += w * (softplus(z) - r->target * z);
        t->d[i] = w * (sigmoid(z) - r->target);
    }
    if (t->o.pairwise > 0)
        loss += pair_term(s, wsum, t->d);
    for (size_t i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        double d = t->d[i];
        if (d == 0)
            continue;
        g[0] += d;
        for (size_t k = 0; k < SY_CLS_NDENSE; k++)
            g[1 + k] += d * r->dense[k];
        for (size_t k = 0; k < r->nnz; k++)
            g[r->idx[k]] += d * r->val[k];
    }
    for (size_t j = 1; j < n; j++) {
        loss += 0.5 * t->l2[j] * x[j] * x[j];
        g[j] += t->l2[j] * x[j];
    }
    return loss;
}

/* A uniform value in [0,1) for the pair of rows (a, b): samples pairs when a set has more
 * than --pairs-max of them. */
static double pair_key(size_t a, size_t b)
{
    uint64_t h = ((uint64_t)a << 32 | (uint64_t)b) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (double)(h >> 11) * (1.0 / 9007199254740992.0);
}

/* The pairs of --pairwise: every (hi, lo) of non-held-out rows of one set with a larger gain
 * at hi, sampled down to --pairs-max per set. Deterministic for the same data and flags. */
static int build_pairs(trainer *t)
{
    if (t->o.pairwise <= 0)
        return 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t n = 0;
        for (size_t set = 0; set < t->nsets; set++) {
            size_t total = 0;
            for (size_t i = 0; i < t->nrows; i++)
                for (size_t j = 0; j < t->nrows; j++)
                    total += t->rows[i].set == (int)set && t->rows[j].set == (int)set &&
                             !t->rows[i].holdout && !t->rows[j].holdout &&
                             t->rows[i].gain > t->rows[j].gain;
            double keep = total > t->o.pairs_max ? (double)t->o.pairs_max / (double)total : 1;
            for (size_t i = 0; i < t->nrows; i++) {
                const row *a = &t->rows[i];
                if (a->set != (int)set || a->holdout)
                    continue;
                for (size_t j = 0; j < t->nrows; j++) {
                    const row *b = &t->rows[j];
                    if (b->set != (int)set || b->holdout || a->gain <= b->gain ||
                        (keep < 1 && pair_key(i, j) >= keep))
                        continue;
                    if (pass == 1)
                        t->pairs[n] = (struct pair){(uint32_t)i, (uint32_t)j,
                                                    (float)(a->gain - b->gain)};
                    n++;
                }
            }
        }
        if (pass == 0) {
            t->pairs = malloc((n ? n : 1) * sizeof(*t->pairs));
            if (t->pairs == NULL)
                return 1;
        }
        t->npairs = n;
    }
    return 0;
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* L-BFGS with a backtracking (Armijo) line search; <x> starts at 0 and ends at the fit.
 * Returns the number of iterations, or -1 on allocation failure. */
static int lbfgs(const subset *s, double *x, double *final_loss)
{
    size_t n = s->t->nparams;
    int m = LBFGS_M, iters = 0, hist = 0, head = 0;
    double *mem = calloc((size_t)(2 * m + 4) * n, sizeof(double));
    double rho[LBFGS_M], alpha[LBFGS_M];

    if (mem == NULL)
        return -1;
    double *g = mem, *d = g + n, *xn = d + n, *gn = xn + n;
    double *S = gn + n, *Y = S + (size_t)m * n;
    memset(x, 0, n * sizeof(*x));
    double f = objective(s, x, g);
    for (iters = 0; iters < s->t->o.epochs; iters++) {
        /* two-loop recursion: d = -H g */
        for (size_t i = 0; i < n; i++)
            d[i] = -g[i];
        for (int k = 0; k < hist; k++) {
            int j = (head - 1 - k + m) % m;
            alpha[j] = rho[j] * dot(S + (size_t)j * n, d, n);
            for (size_t i = 0; i < n; i++)
                d[i] -= alpha[j] * Y[(size_t)j * n + i];
        }
        if (hist > 0) {
            int j = (head - 1 + m) % m;
            double gamma = dot(S + (size_t)j * n, Y + (size_t)j * n, n) /
                           dot(Y + (size_t)j * n, Y + (size_t)j * n, n);
            for (size_t i = 0; i < n; i++)
                d[i] *= gamma;
        }
        for (int k = hist - 1; k >= 0; k--) {
            int j = (head - 1 - k + m) % m;
            double beta = rho[j] * dot(Y + (size_t)j * n, d, n);
            for (size_t i = 0; i < n; i++)
                d[i] += (alpha[j] - beta) * S[(size_t)j * n + i];
        }
        double gd = dot(g, d, n);
        if (gd >= 0) { /* not a descent direction: restart from the gradient */
            hist = 0;
            for (size_t i = 0; i < n; i++)
                d[i] = -g[i];
            gd = dot(g, d, n);
        }
        double step = hist == 0 ? 1.0 / fmax(1.0, sqrt(dot(g, g, n))) : 1.0;
        double fn = f;
        int tries;
        for (tries = 0; tries < 40; tries++) {
            for (size_t i = 0; i < n; i++)
                xn[i] = x[i] + step * d[i];
            fn = objective(s, xn, gn);
            if (fn <= f + 1e-4 * step * gd)
                break;
            step *= 0.5;
        }
        if (tries == 40)
            break;
        /* history: s = xn - x, y = gn - g */
        double *sk = S + (size_t)head * n, *yk = Y + (size_t)head * n;
        for (size_t i = 0; i < n; i++) {
            sk[i] = xn[i] - x[i];
            yk[i] = gn[i] - g[i];
        }
        double sy = dot(sk, yk, n);
        if (sy > 1e-12) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % m;
            if (hist < m)
                hist++;
        }
        memcpy(x, xn, n * sizeof(*x));
        memcpy(g, gn, n * sizeof(*g));
        double df = f - fn;
        f = fn;
        if (df <= 1e-10 * fmax(1.0, fabs(f)))
            break;
    }
    *final_loss = f;
    free(mem);
    return iters;
}

/* ---- reports ------------------------------------------------------------------------------ */

typedef struct scored {
    double score;
    double gain;
    double weak, strong;
    int needs;
} scored;

static int scored_desc(const void *a, const void *b)
{
    double x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return x > y ? -1 : x < y;
}

typedef struct metrics {
    size_t n;
    double logloss, auc, acc, share, apgr, cpt50, cpt80, len_apgr;
} metrics;

/* APGR and CPT exactly as route_eval.py: a 101-point curve over the share of strong calls,
 * ties split by expectation. <v> is sorted by score, descending. */
static void gap_metrics(const scored *v, size_t n, metrics *m)
{
    double base = 0, rs = 0, pts[101][2];
    for (size_t i = 0; i < n; i++) {
        base += v[i].weak;
        rs += v[i].strong;
    }
    double rw = base / (double)n, gap = rs / (double)n - rw;
    for (int p = 0; p <= 100; p++) {
        double k = (double)n * p / 100.0, acc = base, taken = 0;
        for (size_t i = 0; i < n && taken < k;) {
            size_t j = i;
            double g = 0;
            while (j < n && v[j].score == v[i].score)
                g += v[j++].gain;
            double size = (double)(j - i), tk = fmin(size, k - taken);
            acc += g * tk / size;
            taken += tk;
            i = j;
        }
        pts[p][0] = p / 100.0;
        pts[p][1] = acc / (double)n;
    }
    double auc = 0;
    for (int p = 0; p < 100; p++)
        auc += (pts[p + 1][0] - pts[p][0]) * (pts[p + 1][1] + pts[p][1]) / 2;
    m->apgr = gap != 0 ? (auc - rw) / gap : NAN;
    double xs[2] = {0.5, 0.8}, *outs[2] = {&m->cpt50, &m->cpt80};
    for (int q = 0; q < 2; q++) {
        double target = rw + xs[q] * gap;
        *outs[q] = NAN;
        for (int p = 0; p < 100; p++) {
            double c0 = pts[p][0], r0 = pts[p][1], c1 = pts[p + 1][0], r1 = pts[p + 1][1];
            if (r0 >= target) {
                *outs[q] = c0;
                break;
            }
            if (r1 >= target) {
                *outs[q] = c0 + (c1 - c0) * (target - r0) / (r1 - r0);
                break;
            }
        }
    }
}

/* ROC AUC of score vs needs_strong, ties counted half. <v> sorted descending. */
static double roc_auc(const scored *v, size_t n)
{
    double pos = 0, neg = 0, above_neg = 0, sum = 0;
    for (size_t i = 0; i < n; i++)
        pos += v[i].needs != 0;
    neg = (double)n - pos;
    if (pos == 0 || neg == 0)
        return NAN;
    /* walk from the lowest score: count negatives strictly below each positive */
    for (size_t i = n; i > 0;) {
        size_t j = i;
        double p = 0, q = 0;
        while (j > 0 && v[j - 1].score == v[i - 1].score) {
            j--;
            if (v[j].needs)
                p++;
            else
                q++;
        }
        sum += p * (above_neg + q / 2);
        above_neg += q;
        i = j;
    }
    return sum / (pos * neg);
}

static void compute_metrics(scored *v, size_t n, double thr, metrics *m)
{
    memset(m, 0, sizeof(*m));
    m->n = n;
    if (n == 0)
        return;
    double ll = 0, ok = 0, sent = 0;
    for (size_t i = 0; i < n; i++) {
        double p = fmin(fmax(v[i].score, 1e-12), 1 - 1e-12);
        ll -= v[i].needs ? log(p) : log(1 - p);
        bool strong = v[i].score >= thr;
        sent += strong;
        ok += strong == (v[i].needs != 0);
    }
    m->logloss = ll / (double)n;
    m->acc = ok / (double)n;
    m->share = sent / (double)n;
    qsort(v, n, sizeof(*v), scored_desc);
    m->auc = roc_auc(v, n);
    gap_metrics(v, n, m);
}

static void print_metrics_header(const char *title)
{
    printf("%s\n  %-8s %6s %8s %6s %6s %6s %6s %7s %7s %8s\n", title, "set", "n", "logloss", "auc",
           "acc", "share", "apgr", "cpt50", "cpt80", "len-apgr");
}

static void print_metrics(const char *name, const metrics *m)
{
    printf("  %-8s %6zu %8.4f %6.4f %6.4f %6.3f %6.4f %7.4f %7.4f %8.4f\n", name, m->n, m->logloss,
           m->auc, m->acc, m->share, m->apgr, m->cpt50, m->cpt80, m->len_apgr);
}

/* Fills <v> with the rows of set <set> (or every set when set == nsets) where pick[i] holds,
 * scored by sc[i] (or by the first turn's length when <sc> is NULL). The "all" group puts
 * every set's scores on a 0..1 scale first. Returns the count. */
static size_t fill(const trainer *t, size_t set, const bool *pick, const double *sc, scored *v)
{
    size_t n = 0;
    for (size_t i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        if (!pick[i] || (set < t->nsets && r->set != (int)set))
            continue;
        double range = t->set_hi[r->set] - t->set_lo[r->set];
        double lo = set < t->nsets ? 0 : t->set_lo[r->set];
        double div = set < t->nsets || range <= 0 ? 1 : range;
        v[n].score = sc != NULL ? sc[i] : r->length;
        v[n].needs = r->needs;
        v[n].weak = (r->weak - lo) / div;
        v[n].strong = (r->strong - lo) / div;
        v[n].gain = v[n].strong - v[n].weak;
        n++;
    }
    return n;
}

/* Per-set and overall report for rows where pick[i] holds, with scores sc[i]; len-apgr is
 * route_eval's length baseline on the same rows. */
static int report(const trainer *t, const char *title, const bool *pick, const double *sc,
                  double thr)
{
    scored *v = malloc(t->nrows * sizeof(*v));
    metrics m, ml;
    if (v == NULL)
        return 1;
    print_metrics_header(title);
    for (size_t s = 0; s <= t->nsets; s++) {
        if (s == t->nsets && t->nsets == 1)
            break;
        size_t n = fill(t, s, pick, NULL, v);
        if (n == 0)
            continue;
        compute_metrics(v, n, thr, &ml);
        (void)fill(t, s, pick, sc, v);
        compute_metrics(v, n, thr, &m);
        m.len_apgr = ml.apgr;
        print_metrics(s < t->nsets ? t->sets[s] : "all", &m);
    }
    free(v);
    return 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The threshold that sends <share> of the training rows to the flagship. Chat traffic is
 * mostly open questions, so when there are enough open (not multiple-choice) training rows
 * the quantile is taken over those. */
static double share_threshold(const trainer *t, const double *sc, double share)
{
    double *v = malloc(t->nrows * sizeof(*v));
    size_t n = 0, nopen = 0;
    double thr = 0.5;
    if (v == NULL)
        return thr;
    for (size_t i = 0; i < t->nrows; i++)
        nopen += !t->rows[i].holdout && t->rows[i].dense[SY_CLS_D_open] != 0;
    for (size_t i = 0; i < t->nrows; i++)
        if (!t->rows[i].holdout && (nopen < 20 || t->rows[i].dense[SY_CLS_D_open] != 0))
            v[n++] = sc[i];
    if (n > 0) {
        qsort(v, n, sizeof(*v), cmp_double);
        size_t k = (size_t)floor((1.0 - share) * (double)n);
        thr = k >= n ? 1.0 : v[k];
    }
    free(v);
    return thr;
}

static const char *label_name(label_kind k)
{
    return k == LABEL_NEEDS ? "needs_strong" : k == LABEL_GAIN_WEIGHTED ? "gain_weighted" : "gain";
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s != NULL ? s + 1 : p;
}

/* Writes the weights file (to <out>.tmp, then renamed, so a reader never sees half a file). */
static int write_weights(const trainer *t, const double *x, double thr, int iters, size_t ntrain,
                         size_t nheld, size_t *kept)
{
    size_t plen = strlen(t->o.out) + 5;
    char *tmp = malloc(plen);
    FILE *f = NULL;
    int rc = 1;

    if (tmp == NULL)
        goto out;
    (void)snprintf(tmp, plen, "%s.tmp", t->o.out);
    f = fopen(tmp, "w");
    if (f == NULL) {
        fprintf(stderr, "train: %s: %s\n", tmp, strerror(errno));
        goto out;
    }
    fprintf(f, "{\"version\":%d,\"kind\":\"logreg\",\"features\":\"%s\",\"hash_bits\":%u,\n",
            SY_CLS_VERSION, SY_CLS_FEATURES, t->o.hash_bits);
    fprintf(f, "\"bias\":%.9g,\"threshold\":%.6f,\n", x[0], thr);
    fprintf(f, "\"trained_on\":{\"files\":[");
    {
        char *list = strdup(t->o.data), *save = NULL;
        int first = 1;
        if (list == NULL)
            goto out;
        for (char *p = strtok_r(list, ",", &save); p != NULL; p = strtok_r(NULL, ",", &save)) {
            json_t *s = json_string(base_name(p));
            char *js = s != NULL ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
            fprintf(f, "%s%s", first ? "" : ",", js != NULL ? js : "\"?\"");
            free(js);
            json_decref(s);
            first = 0;
        }
        free(list);
    }
    fprintf(f,
            "],\"rows\":%zu,\"held_out\":%zu,\"seed\":%llu,\"holdout\":%g,\"label\":\"%s\","
            "\"l2\":%g,\"l2_hashed\":%g,\"l2_mc\":%g,\"iterations\":%d,\"prune\":%g,"
            "\"threshold_share\":%g,\"pairwise\":%g,\"set_weight\":{",
            ntrain, nheld, (unsigned long long)t->o.seed, t->o.holdout, label_name(t->o.label),
            t->o.l2, t->o.l2_hashed, t->o.l2_mc, iters, t->o.prune, t->o.threshold_share,
            t->o.pairwise);
    /* the recipe is part of what the file describes: the weight of each set's rows */
    for (size_t i = 0; i < t->nsets; i++) {
        json_t *s = json_string(t->sets[i]);
        char *js = s != NULL ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
        fprintf(f, "%s%s:%g", i ? "," : "", js != NULL ? js : "\"?\"", t->set_weight[i]);
        free(js);
        json_decref(s);
    }
    fprintf(f, "}},\n");
    fprintf(f, "\"dense\":{");
    for (size_t i = 0; i < SY_CLS_NDENSE; i++)
        fprintf(f, "%s\n\"%s\":%.9g", i ? "," : "", sy_classifier_dense_name(i), x[1 + i]);
    fprintf(f, "},\n\"hashed\":{");
    *kept = 0;
    for (size_t k = 0; k < t->nbuckets; k++) {
        double w = x[1 + SY_CLS_NDENSE + k];
        if (fabs(w) < t->o.prune || w == 0)
            continue;
        fprintf(f, "%s\"%u\":%.5g", *kept ? "," : "", t->bucket[k], w);
        if (++*kept % 8 == 0)
            (void)fputc('\n', f); /* errors: ferror() below */
    }
    fprintf(f, "}}\n");
    if (ferror(f) != 0 || fclose(f) != 0) {
        f = NULL;
        fprintf(stderr, "train: %s: write error\n", tmp);
        goto out;
    }
    f = NULL;
    if (rename(tmp, t->o.out) != 0) {
        fprintf(stderr, "train: %s: %s\n", t->o.out, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (f != NULL)
        (void)fclose(f);
    free(tmp);
    return rc;
}

/* Writes DIR/<prefix>-<set>.jsonl (the rows) and DIR/<prefix>-<set>.scores.jsonl. */
static int write_eval(const trainer *t, const char *prefix, const bool *pick, const double *sc)
{
    int rc = 1;
    (void)mkdir(t->o.eval_dir, 0777);
    for (size_t s = 0; s < t->nsets; s++) {
        char pd[4096], ps[4096];
        (void)snprintf(pd, sizeof(pd), "%s/%s-%s.jsonl", t->o.eval_dir, prefix, t->sets[s]);
        (void)snprintf(ps, sizeof(ps), "%s/%s-%s.scores.jsonl", t->o.eval_dir, prefix, t->sets[s]);
        FILE *fd = fopen(pd, "w"), *fs = fopen(ps, "w");
        bool bad = fd == NULL || fs == NULL;
        for (size_t i = 0; !bad && i < t->nrows; i++) {
            if (!pick[i] || t->rows[i].set != (int)s)
                continue;
            fprintf(fd, "%s\n", t->rows[i].line);
            fprintf(fs, "{\"score\": %.9g}\n", sc[i]);
        }
        if (fd != NULL && (ferror(fd) || fclose(fd) != 0))
            bad = true;
        if (fs != NULL && (ferror(fs) || fclose(fs) != 0))
            bad = true;
        if (bad) {
            fprintf(stderr, "train: cannot write %s / %s\n", pd, ps);
            goto out;
        }
    }
    rc = 0;
out:
    return rc;
}

/* Scores the held-out rows through the written file, as the proxy would. */
static int score_with_file(const trainer *t, const double *mem_sc, double *sc)
{
    char err[512];
    sy_classifier *c = NULL;
    double maxdiff = 0;
    int rc = 1;

    if (sy_classifier_load(t->o.out, &c, err, sizeof(err)) != SY_OK) {
        fprintf(stderr, "train: reloading the weights: %s\n", err);
        goto out;
    }
    for (size_t i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        sc[i] = mem_sc[i];
        if (!r->holdout)
            continue;
        json_error_t jerr;
        json_t *j = json_loads(r->line, 0, &jerr);
        json_t *req = j != NULL
                          ? json_pack("{s:[{s:s,s:O}]}", "messages", "role", "user", "content",
                                      json_array_get(json_object_get(j, "turns"), 0))
                          : NULL;
        sy_err e = req != NULL ? sy_classifier_score(c, req, &sc[i], NULL, 0) : SY_ENOMEM;
        json_decref(req);
        json_decref(j);
        if (e != SY_OK) {
            fprintf(stderr, "train: scoring %s: %s\n", r->id, sy_err_str(e));
            goto out;
        }
        maxdiff = fmax(maxdiff, fabs(sc[i] - mem_sc[i]));
    }
    if (!t->o.quiet)
        printf("reloaded %s: %zu hashed weights; max |score(file) - score(fit)| on held-out = "
               "%.2g (pruning and rounding)\n",
               t->o.out, sy_classifier_nnz(c), maxdiff);
    rc = 0;
out:
    sy_classifier_free(c);
    return rc;
}

static void top_weights(const trainer *t, const double *x)
{
    printf("dense weights:");
    for (size_t i = 0; i < SY_CLS_NDENSE; i++)
        printf("%s %s=%.3f", i % 6 == 0 ? "\n " : "", sy_classifier_dense_name(i), x[1 + i]);
    printf("\n");
}

static int cross_validate(trainer *t, double *x, double *sc)
{
    bool *all = malloc(t->nrows * sizeof(*all));
    int rc = 1;
    if (all == NULL)
        goto out;
    for (int fold = 0; fold < t->o.folds; fold++) {
        subset s = {t, fold};
        double loss;
        if (lbfgs(&s, x, &loss) < 0)
            goto out;
        for (size_t i = 0; i < t->nrows; i++)
            if (t->rows[i].fold == fold)
                sc[i] = sigmoid(row_logit(&t->rows[i], x));
    }
    for (size_t i = 0; i < t->nrows; i++)
        all[i] = !t->rows[i].holdout;
    /* with --holdout 0 this is a cross-fit over every row: each row is scored once, by the
     * model fitted on the other folds */
    char title[112];
    (void)snprintf(title, sizeof(title),
                   "%d-fold cross-validation over %s rows (out-of-fold scores, fold key %llu):",
                   t->o.folds, t->o.holdout > 0 ? "the training" : "all",
                   (unsigned long long)(t->o.fold_seed_set ? t->o.fold_seed : t->o.seed));
    if (report(t, title, all, sc, 0.5) != 0 || write_eval(t, "cv", all, sc) != 0)
        goto out;
    rc = 0;
out:
    free(all);
    return rc;
}

static void trainer_cleanup(trainer *t)
{
    for (size_t i = 0; i < t->nrows; i++) {
        free(t->rows[i].id);
        free(t->rows[i].line);
        free(t->rows[i].idx);
        free(t->rows[i].val);
    }
    free(t->rows);
    for (size_t i = 0; i < t->nsets; i++)
        free(t->sets[i]);
    free(t->tmp_b);
    free(t->tmp_k);
    free(t->remap);
    free(t->bucket);
    free(t->l2);
    free(t->pairs);
    free(t->z);
    free(t->d);
}

int sy_train_main(int argc, char **argv)
{
    trainer t;
    double *x = NULL, *sc = NULL, *fsc = NULL, loss = 0;
    bool *held = NULL, *train = NULL;
    size_t ntrain = 0, nheld = 0, kept = 0;
    int rc = 1, iters;

    memset(&t, 0, sizeof(t));
    int prc = parse_opts(argc, argv, &t.o);
    if (prc >= 0)
        return prc;
    if (read_data(&t) != 0 || apply_set_weights(&t) != 0)
        goto out;
    make_targets(&t);
    if (remap(&t) != 0 || build_pairs(&t) != 0)
        goto oom;
    t.z = calloc(t.nrows, sizeof(*t.z));
    t.d = calloc(t.nrows, sizeof(*t.d));
    if (t.z == NULL || t.d == NULL)
        goto oom;
    x = malloc(t.nparams * sizeof(*x));
    sc = calloc(t.nrows, sizeof(*sc));
    fsc = calloc(t.nrows, sizeof(*fsc));
    held = malloc(t.nrows * sizeof(*held));
    train = malloc(t.nrows * sizeof(*train));
    if (x == NULL || sc == NULL || fsc == NULL || held == NULL || train == NULL)
        goto oom;
    for (size_t i = 0; i < t.nrows; i++) {
        held[i] = t.rows[i].holdout;
        train[i] = !held[i];
        ntrain += train[i];
        nheld += held[i];
    }
    if (!t.o.quiet) {
        printf("train: %zu rows (%zu train, %zu held out, seed %llu) in %zu sets, %zu hashed "
               "features seen, label %s, l2 %g\n",
               t.nrows, ntrain, nheld, (unsigned long long)t.o.seed, t.nsets, t.nbuckets,
               label_name(t.o.label), t.o.l2);
    }
    if (ntrain == 0) {
        fprintf(stderr, "train: every row is held out\n");
        goto out;
    }
    if (t.o.folds > 0 && cross_validate(&t, x, sc) != 0)
        goto oom;

    subset s = {&t, -1};
    iters = lbfgs(&s, x, &loss);
    if (iters < 0)
        goto oom;
    for (size_t i = 0; i < t.nrows; i++)
        sc[i] = sigmoid(row_logit(&t.rows[i], x));
    double thr = t.o.threshold >= 0 ? t.o.threshold : share_threshold(&t, sc, t.o.threshold_share);
    if (write_weights(&t, x, thr, iters, ntrain, nheld, &kept) != 0)
        goto out;
    if (!t.o.quiet) {
        printf("fit: %d L-BFGS iterations, objective %.6f; wrote %s (%zu hashed weights kept, "
               "threshold %.4f)\n",
               iters, loss, t.o.out, kept, thr);
        top_weights(&t, x);
        if (report(&t, "training rows (optimistic):", train, sc, thr) != 0)
            goto oom;
    }
    if (nheld > 0) {
        if (score_with_file(&t, sc, fsc) != 0)
            goto out;
        if (report(&t, "held-out rows (scored from the written file):", held, fsc, thr) != 0)
            goto oom;
        if (t.o.eval_dir != NULL && write_eval(&t, "holdout", held, fsc) != 0)
            goto out;
    }
    rc = 0;
    goto out;
oom:
    fprintf(stderr, "train: out of memory\n");
out:
    free(x);
    free(sc);
    free(fsc);
    free(held);
    free(train);
    trainer_cleanup(&t);
    return rc;
}
