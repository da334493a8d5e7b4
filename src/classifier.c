/* classifier: features of a chat request, a logistic score and its explanation.
 *
 * The one design decision: extraction is a single pass over the bytes of the first user turn
 * that reports every hashed n-gram to a callback. Scoring uses a callback that adds the
 * n-gram's weight (nothing is stored, so there is no per-request allocation); training and the
 * explanation use other callbacks over the same pass, so what is trained is exactly what is
 * served. Word and phrase lists (question words, imperative verbs, code keywords, constraint
 * phrases) are a small hash table built once (pthread_once), not regular expressions. */
#include "switchyard/classifier.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hashing ---------------------------------------------------------------------------- */

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u
#define SEED_WORD 0x5bd1e995u
#define SEED_BIGRAM 0x27d4eb2fu
#define SEED_CHAR 0x165667b1u
#define HASH_BOS 0x9e3779b9u /* the start-of-turn pseudo word */
#define HASH_EOS 0x7f4a7c15u /* the end-of-turn pseudo word */
#define WORD_HASH_MAX 24     /* bytes of a word that are hashed (and shown) */

static inline uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static inline uint32_t bigram_hash(uint32_t a, uint32_t b)
{
    uint32_t x = ((a << 15) | (a >> 17)) * 0x9e3779b1u;
    return fmix32((x + b) ^ SEED_BIGRAM);
}

/* ---- byte classes and the lexicon, built once ------------------------------------------ */

enum {
    C_WORD = 1 << 0, /* part of a word: ASCII alnum or any non-ASCII byte */
    C_DIGIT = 1 << 1,
    C_UPPER = 1 << 2,
    C_SPACE = 1 << 3,
    C_SYNTAX = 1 << 4, /* code-ish punctuation */
    C_MATHOP = 1 << 5,
    C_ALPHA = 1 << 6,
};

/* Lexicon flags (what a word counts towards) and phrase ids (words matched in sequence). */
enum {
    L_CODE = 1 << 0,
    L_CONSTRAINT = 1 << 1,
    L_PROVE = 1 << 2,
    L_WH = 1 << 3,
    L_IMPER = 1 << 4,
    L_PLEASE = 1 << 5,
    L_WHY = 1 << 6,
};
enum {
    P_NONE = 0,
    P_STEP,
    P_BY,
    P_AT,
    P_LEAST,
    P_MOST,
    P_SHOW,
    P_THAT,
    P_NO,
    P_MORE,
    P_THAN,
    P_DO,
    P_NOT,
    P_IN,
    P_DETAIL,
    P_MAKE,
    P_SURE,
    P_YOUR,
    P_WORK,
};

typedef struct lex_entry {
    const char *word;
    unsigned flags;
    unsigned phrase;
} lex_entry;

/* clang-format off */
static const lex_entry lexicon[] = {
    /* question words (first word) */
    {"what", L_WH, 0}, {"why", L_WH | L_WHY, 0}, {"how", L_WH, 0}, {"which", L_WH, 0},
    {"who", L_WH, 0}, {"whom", L_WH, 0}, {"whose", L_WH, 0}, {"when", L_WH, 0},
    {"where", L_WH, 0}, {"is", L_WH, 0}, {"are", L_WH, 0}, {"can", L_WH, 0},
    {"could", L_WH, 0}, {"does", L_WH, 0}, {"do", L_WH, P_DO}, {"did", L_WH, 0},
    {"should", L_WH, 0}, {"would", L_WH, 0}, {"will", L_WH, 0}, {"was", L_WH, 0},
    {"were", L_WH, 0}, {"has", L_WH, 0}, {"have", L_WH, 0}, {"may", L_WH, 0},
    {"might", L_WH, 0},
    /* imperative verbs (first word) */
    {"write", L_IMPER, 0}, {"explain", L_IMPER, 0}, {"create", L_IMPER, 0},
    {"implement", L_IMPER, 0}, {"list", L_IMPER, 0}, {"give", L_IMPER, 0},
    {"describe", L_IMPER, 0}, {"generate", L_IMPER, 0}, {"compose", L_IMPER, 0},
    {"summarize", L_IMPER, 0}, {"summarise", L_IMPER, 0}, {"translate", L_IMPER, 0},
    {"calculate", L_IMPER, 0}, {"solve", L_IMPER, 0}, {"prove", L_IMPER | L_PROVE, 0},
    {"find", L_IMPER, 0}, {"compute", L_IMPER, 0}, {"design", L_IMPER, 0},
    {"build", L_IMPER, 0}, {"make", L_IMPER, P_MAKE}, {"tell", L_IMPER, 0},
    {"draft", L_IMPER, 0}, {"rewrite", L_IMPER, 0}, {"convert", L_IMPER, 0},
    {"help", L_IMPER, 0}, {"show", L_IMPER, P_SHOW}, {"provide", L_IMPER, 0},
    {"suggest", L_IMPER, 0}, {"compare", L_IMPER, 0}, {"analyze", L_IMPER, 0},
    {"analyse", L_IMPER, 0}, {"evaluate", L_IMPER, 0}, {"determine", L_IMPER, 0},
    {"simplify", L_IMPER, 0}, {"derive", L_IMPER | L_PROVE, 0}, {"plan", L_IMPER, 0},
    {"outline", L_IMPER, 0}, {"act", L_IMPER, 0}, {"pretend", L_IMPER, 0},
    {"imagine", L_IMPER, 0}, {"develop", L_IMPER, 0}, {"fix", L_IMPER, 0},
    {"debug", L_IMPER | L_CODE, 0}, {"refactor", L_IMPER | L_CODE, 0},
    {"optimize", L_IMPER, 0}, {"optimise", L_IMPER, 0}, {"name", L_IMPER, 0},
    {"identify", L_IMPER, 0}, {"classify", L_IMPER, 0}, {"define", L_IMPER, 0},
    {"estimate", L_IMPER, 0}, {"edit", L_IMPER, 0}, {"correct", L_IMPER, 0},
    {"improve", L_IMPER, 0}, {"complete", L_IMPER, 0}, {"answer", L_IMPER, 0},
    {"choose", L_IMPER, 0}, {"select", L_IMPER, 0}, {"consider", L_IMPER, 0},
    {"let", L_IMPER, 0}, {"assume", L_IMPER, 0}, {"suppose", L_IMPER, 0},
    {"use", L_IMPER, 0}, {"please", L_PLEASE, 0},
    /* code */
    {"def", L_CODE, 0}, {"function", L_CODE, 0}, {"return", L_CODE, 0},
    {"include", L_CODE, 0}, {"class", L_CODE, 0}, {"import", L_CODE, 0},
    {"public", L_CODE, 0}, {"private", L_CODE, 0}, {"static", L_CODE, 0},
    {"void", L_CODE, 0}, {"const", L_CODE, 0}, {"struct", L_CODE, 0}, {"printf", L_CODE, 0},
    {"println", L_CODE, 0}, {"elif", L_CODE, 0}, {"lambda", L_CODE, 0},
    {"async", L_CODE, 0}, {"await", L_CODE, 0}, {"func", L_CODE, 0}, {"impl", L_CODE, 0},
    {"namespace", L_CODE, 0}, {"typedef", L_CODE, 0}, {"foreach", L_CODE, 0},
    {"cout", L_CODE, 0}, {"std", L_CODE, 0}, {"python", L_CODE, 0},
    {"javascript", L_CODE, 0}, {"java", L_CODE, 0}, {"typescript", L_CODE, 0},
    {"rust", L_CODE, 0}, {"golang", L_CODE, 0}, {"sql", L_CODE, 0}, {"html", L_CODE, 0},
    {"css", L_CODE, 0}, {"json", L_CODE, 0}, {"regex", L_CODE, 0}, {"bash", L_CODE, 0},
    {"api", L_CODE, 0}, {"code", L_CODE, 0}, {"script", L_CODE, 0},
    {"program", L_CODE, 0}, {"compile", L_CODE, 0}, {"var", L_CODE, 0},
    /* constraints and proofs */
    {"exactly", L_CONSTRAINT, 0}, {"must", L_CONSTRAINT, 0}, {"without", L_CONSTRAINT, 0},
    {"only", L_CONSTRAINT, 0}, {"don't", L_CONSTRAINT, 0}, {"ensure", L_CONSTRAINT, 0},
    {"strictly", L_CONSTRAINT, 0}, {"never", L_CONSTRAINT, 0},
    {"justify", L_PROVE, 0}, {"proof", L_PROVE, 0}, {"demonstrate", L_PROVE, 0},
    /* phrase parts */
    {"step", 0, P_STEP}, {"by", 0, P_BY}, {"at", 0, P_AT}, {"least", 0, P_LEAST},
    {"most", 0, P_MOST}, {"that", 0, P_THAT}, {"no", 0, P_NO}, {"more", 0, P_MORE},
    {"than", 0, P_THAN}, {"not", 0, P_NOT}, {"in", 0, P_IN}, {"detail", 0, P_DETAIL},
    {"sure", 0, P_SURE}, {"your", 0, P_YOUR}, {"work", 0, P_WORK},
};
/* clang-format on */

#define LEX_SLOTS 512 /* power of two, > 2x the lexicon */
#define LEX_WORD_MAX 15

static uint8_t byte_class[256];
static int16_t lex_slot[LEX_SLOTS]; /* index into lexicon[] + 1, 0 = empty */
static uint32_t lex_hash[LEX_SLOTS];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static uint32_t fnv_norm(const char *s, size_t n);

static void tables_build(void)
{
    for (int c = 0; c < 256; c++) {
        uint8_t k = 0;
        if (c >= '0' && c <= '9')
            k |= C_WORD | C_DIGIT;
        if (c >= 'a' && c <= 'z')
            k |= C_WORD | C_ALPHA;
        if (c >= 'A' && c <= 'Z')
            k |= C_WORD | C_ALPHA | C_UPPER;
        if (c >= 0x80)
            k |= C_WORD;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v')
            k |= C_SPACE;
        if (strchr("{}[]();<>=#|&", c) != NULL && c != 0)
            k |= C_SYNTAX;
        if (strchr("+*/=^<>", c) != NULL && c != 0)
            k |= C_MATHOP;
        byte_class[c] = k;
    }
    for (size_t i = 0; i < sizeof(lexicon) / sizeof(lexicon[0]); i++) {
        uint32_t h = fnv_norm(lexicon[i].word, strlen(lexicon[i].word));
        size_t j = h & (LEX_SLOTS - 1);
        while (lex_slot[j] != 0)
            j = (j + 1) & (LEX_SLOTS - 1);
        lex_slot[j] = (int16_t)(i + 1);
        lex_hash[j] = h;
    }
}

static inline unsigned char norm_byte(unsigned char c)
{
    uint8_t k = byte_class[c];
    if (k & C_UPPER)
        return (unsigned char)(c + 32);
    if (k & C_DIGIT)
        return '0';
    if (k & C_SPACE)
        return ' ';
    return c;
}

/* FNV-1a of the normalised bytes (lower-case ASCII, digits as '0'), at most WORD_HASH_MAX. */
static uint32_t fnv_norm(const char *s, size_t n)
{
    uint32_t h = FNV_OFFSET;
    if (n > WORD_HASH_MAX)
        n = WORD_HASH_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        else if (c >= '0' && c <= '9')
            c = '0';
        h = (h ^ c) * FNV_PRIME;
    }
    return h;
}

static const lex_entry *lex_find(uint32_t h, const char *w, size_t n)
{
    if (n > LEX_WORD_MAX)
        return NULL;
    for (size_t j = h & (LEX_SLOTS - 1); lex_slot[j] != 0; j = (j + 1) & (LEX_SLOTS - 1)) {
        if (lex_hash[j] != h)
            continue;
        const lex_entry *e = &lexicon[lex_slot[j] - 1];
        size_t k = 0;
        for (; k < n && e->word[k] != '\0'; k++) {
            unsigned char c = (unsigned char)w[k];
            if (c >= 'A' && c <= 'Z')
                c = (unsigned char)(c + 32);
            if (c != (unsigned char)e->word[k])
                break;
        }
        if (k == n && e->word[k] == '\0')
            return e;
    }
    return NULL;
}

/* ---- the scan ---------------------------------------------------------------------------- */

typedef struct token {
    const char *p;
    size_t len;
    uint32_t h; /* FNV of the normalised bytes */
} token;

typedef struct scan {
    sy_cls_emit_fn emit;
    void *ctx;
    const float *weights; /* plain scoring: sum weights here instead of calling emit */
    uint32_t mask;
    double wsum[SY_CLS_NKINDS];
    uint32_t salt; /* non-zero: multiple-choice question, n-grams hash into their own space */
    bool mc;
    size_t mc_lines;
    size_t budget; /* bytes still scanned */
    size_t pre_budget;
    size_t total; /* bytes of the turn, scanned or not */
    /* char 4-grams over the normalised text, runs of spaces collapsed */
    uint32_t packed;
    unsigned nch;
    bool prev_space;
    /* the word being read */
    const char *wp;
    size_t wlen;
    uint32_t wh;
    bool wdigits;
    token prev;
    bool have_prev;
    unsigned phr1, phr2; /* phrase ids of the last two words */
    size_t nwords_alnum;
    bool first_pending; /* the first word (after "please") is not classified yet */
    /* byte context */
    unsigned char b1, b2; /* previous two bytes */
    uint64_t tail;        /* last 8 normalised non-space bytes (from the pre-pass) */
    size_t run_backticks;
    /* counts */
    size_t count[SY_CLS_NKINDS];
    size_t scanned, words, word_bytes, long_words, upper, letters, digits, non_ascii, cjk, cyr,
        syntax, mathops, latex, numbers, decimals, money, qmarks, fences, backticks, newlines,
        sentences, code_words, constraints, step, prove, why;
    bool wh_start, imperative;
} scan;

static void scan_init(scan *s, sy_cls_emit_fn emit, void *ctx)
{
    pthread_once(&tables_once, tables_build);
    memset(s, 0, sizeof(*s));
    s->emit = emit;
    s->ctx = ctx;
    s->budget = SY_CLS_SCAN_MAX;
    s->pre_budget = SY_CLS_SCAN_MAX;
    s->packed = ' ';
    s->nch = 1;
    s->prev_space = true;
    s->first_pending = true;
}

static inline void put(scan *s, sy_cls_kind kind, uint32_t h, const char *a, size_t alen,
                       const char *b, size_t blen)
{
    s->count[kind]++;
    if (s->salt != 0)
        h = fmix32(h ^ s->salt);
    /* plain scoring: add the weight, no call and no branch on it (most buckets are zero) */
    if (s->weights != NULL)
        s->wsum[kind] += s->weights[h & s->mask];
    else if (s->emit != NULL)
        s->emit(s->ctx, kind, h, a, alen, b, blen);
}

static inline void char_gram(scan *s, unsigned char nc)
{
#ifdef SY_CLS_NOCHAR
    return;
#endif
    bool sp = nc == ' ';
    if (sp && s->prev_space)
        return;
    s->prev_space = sp;
    s->packed = (s->packed << 8) | nc;
    if (++s->nch >= 4) {
        char g[4] = {(char)(s->packed >> 24), (char)(s->packed >> 16), (char)(s->packed >> 8),
                     (char)s->packed};
        put(s, SY_CLS_CHAR, fmix32(s->packed ^ SEED_CHAR), g, 4, NULL, 0);
    }
}

/* A token (word or punctuation) ends: unigram, bigram with the previous token. */
static void token_done(scan *s, const char *p, size_t len, uint32_t h)
{
    put(s, SY_CLS_WORD, fmix32(h ^ SEED_WORD), p, len, NULL, 0);
    if (s->have_prev)
        put(s, SY_CLS_BIGRAM, bigram_hash(s->prev.h, h), s->prev.p, s->prev.len, p, len);
    else
        put(s, SY_CLS_BIGRAM, bigram_hash(HASH_BOS, h), NULL, 0, p, len);
    s->prev.p = p;
    s->prev.len = len;
    s->prev.h = h;
    s->have_prev = true;
}

static void word_done(scan *s)
{
    const char *p = s->wp;
    size_t n = s->wlen;
    uint32_t h = s->wh;

    s->wp = NULL;
    s->words++;
    s->word_bytes += n;
    if (n >= 10)
        s->long_words++;
    token_done(s, p, n, h);
    if (s->wdigits)
        return;
    const lex_entry *e = lex_find(h, p, n);
    unsigned flags = e != NULL ? e->flags : 0;
    unsigned ph = e != NULL ? e->phrase : P_NONE;
    if (s->first_pending) {
        if (!(flags & L_PLEASE)) {
            s->first_pending = false;
            s->wh_start = (flags & L_WH) != 0;
            s->imperative = (flags & L_IMPER) != 0;
        }
    }
    if (flags & L_CODE)
        s->code_words++;
    if (flags & L_CONSTRAINT)
        s->constraints++;
    if (flags & L_PROVE)
        s->prove++;
    if (flags & L_WHY)
        s->why++;
    switch (ph) {
    case P_STEP:
        if (s->phr1 == P_BY && s->phr2 == P_STEP)
            s->step++;
        break;
    case P_WORK:
        if (s->phr1 == P_YOUR && s->phr2 == P_SHOW)
            s->step++;
        break;
    case P_LEAST:
    case P_MOST:
        if (s->phr1 == P_AT)
            s->constraints++;
        break;
    case P_THAN:
        if (s->phr1 == P_MORE && s->phr2 == P_NO)
            s->constraints++;
        break;
    case P_NOT:
        if (s->phr1 == P_DO)
            s->constraints++;
        break;
    case P_DETAIL:
        if (s->phr1 == P_IN)
            s->constraints++;
        break;
    case P_SURE:
        if (s->phr1 == P_MAKE)
            s->constraints++;
        break;
    case P_THAT:
        if (s->phr1 == P_SHOW)
            s->prove++;
        break;
    default:
        break;
    }
    s->phr2 = s->phr1;
    s->phr1 = ph;
}

/* "(A) " anywhere after a space, or "A. " / "A) " / "A: " at a line start. */
static bool mc_at(const unsigned char *p, size_t n, size_t i, bool line_start)
{
    if (p[i] == '(' && i + 2 < n && p[i + 1] >= 'A' && p[i + 1] <= 'H' && p[i + 2] == ')')
        return i + 3 >= n || (byte_class[p[i + 3]] & C_SPACE);
    if (!line_start || i + 1 >= n)
        return false;
    bool up = p[i] >= 'A' && p[i] <= 'H', low = p[i] >= 'a' && p[i] <= 'h';
    if (!(up && (p[i + 1] == '.' || p[i + 1] == ')' || p[i + 1] == ':')) &&
        !(low && p[i + 1] == ')'))
        return false;
    return i + 2 >= n || (byte_class[p[i + 2]] & C_SPACE);
}

/* The pre-pass: multiple-choice option lines and the last non-space bytes, needed before the
 * n-grams are hashed (a multiple-choice question hashes into its own space). Only line starts
 * and '(' are visited. */
static void prepass_text(scan *s, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = len < s->pre_budget ? len : s->pre_budget;

    s->pre_budget -= n;
    for (size_t i = 0; i < n;) {
        while (i < n && (p[i] == ' ' || p[i] == '\t'))
            i++;
        if (i < n && mc_at(p, n, i, true))
            s->mc_lines++;
        const unsigned char *nl = memchr(p + i, '\n', n - i);
        size_t end = nl != NULL ? (size_t)(nl - p) : n;
        for (const unsigned char *q = memchr(p + i, '(', end - i); q != NULL;
             q = memchr(q + 1, '(', end - (size_t)(q + 1 - p))) {
            size_t j = (size_t)(q - p);
            if (j > i && mc_at(p, n, j, false))
                s->mc_lines++;
            if (j + 1 >= end)
                break;
        }
        i = end + 1;
    }
    uint64_t tail = 0;
    unsigned got = 0;
    for (size_t i = n; i > 0 && got < 8; i--) {
        if (byte_class[p[i - 1]] & C_SPACE)
            continue;
        tail |= (uint64_t)norm_byte(p[i - 1]) << (8 * got++);
    }
    if (got > 0)
        s->tail = tail;
}

static void scan_feed(scan *s, const char *text, size_t len)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = len < s->budget ? len : s->budget;

    s->total += len;
    s->budget -= n;
    s->scanned += n;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        uint8_t k = byte_class[c];
        unsigned char nc = norm_byte(c);

        if (c != '`')
            s->run_backticks = 0;
        char_gram(s, nc);
        if (k & C_WORD) {
            if (s->wp == NULL) {
                s->wp = text + i;
                s->wlen = 0;
                s->wh = FNV_OFFSET;
                s->wdigits = true;
            }
            if (s->wlen < WORD_HASH_MAX)
                s->wh = (s->wh ^ nc) * FNV_PRIME;
            s->wlen++;
            if (!(k & C_DIGIT))
                s->wdigits = false;
            if (k & C_DIGIT) {
                s->digits++;
                if (!(byte_class[s->b1] & C_DIGIT) &&
                    !((s->b1 == '.' || s->b1 == ',') && (byte_class[s->b2] & C_DIGIT)))
                    s->numbers++;
            } else if (k & C_ALPHA) {
                s->letters++;
                if (k & C_UPPER)
                    s->upper++;
            } else {
                s->non_ascii++;
                if (c >= 0xe3 && c <= 0xed)
                    s->cjk += 3;
                else if (c == 0xd0 || c == 0xd1)
                    s->cyr += 2;
            }
        } else {
            /* "don't": an apostrophe between letters stays in the word */
            if (c == '\'' && s->wp != NULL && i + 1 < n && (byte_class[p[i + 1]] & C_ALPHA)) {
                if (s->wlen < WORD_HASH_MAX)
                    s->wh = (s->wh ^ c) * FNV_PRIME;
                s->wlen++;
                goto next;
            }
            if (s->wp != NULL)
                word_done(s);
            if (k & C_SPACE) {
                if (c == '\n')
                    s->newlines++;
                goto next;
            }
            token_done(s, text + i, 1, (FNV_OFFSET ^ c) * FNV_PRIME);
            if (k & C_SYNTAX)
                s->syntax++;
            if (k & C_MATHOP)
                s->mathops++;
            switch (c) {
            case '?':
                s->qmarks++;
                break;
            case '`':
                if (++s->run_backticks == 3) {
                    s->fences++;
                    s->backticks -= 2;
                } else
                    s->backticks++;
                break;
            case '\\':
                if (i + 1 < n && (byte_class[p[i + 1]] & C_ALPHA))
                    s->latex++;
                break;
            case '$':
                if (i + 1 < n && (byte_class[p[i + 1]] & C_DIGIT))
                    s->money++;
                else
                    s->latex++;
                break;
            case '_':
                if (i + 1 < n && p[i + 1] == '{')
                    s->latex++;
                break;
            case '%':
                if (byte_class[s->b1] & C_DIGIT)
                    s->money++;
                break;
            case '.':
            case '/':
                if ((byte_class[s->b1] & C_DIGIT) && i + 1 < n && (byte_class[p[i + 1]] & C_DIGIT))
                    s->decimals++;
                break;
            default:
                break;
            }
            if ((c == '.' || c == '!' || c == '?') &&
                (i + 1 >= n || (byte_class[p[i + 1]] & C_SPACE)))
                s->sentences++;
        }
    next:
        s->b2 = s->b1;
        s->b1 = c;
    }
}

/* Between two text parts: ends the word, acts as a newline. */
static void scan_break(scan *s)
{
    if (s->wp != NULL)
        word_done(s);
    char_gram(s, ' ');
    s->b1 = s->b2 = '\n';
}

static double lg(double x, double div)
{
    return log2(1.0 + x) / div;
}

static double cap1(double x)
{
    return x > 1.0 ? 1.0 : x;
}

static void scan_finish(scan *s, size_t turns, size_t system_bytes, sy_cls_features *f)
{
    double *d = f->dense;
    double tokens = (double)s->total / 4.0;
    double ascii_letters = (double)s->letters;
    double sc = s->scanned > 0 ? (double)s->scanned : 1.0;

    if (s->wp != NULL)
        word_done(s);
    char_gram(s, ' ');
    if (s->have_prev)
        put(s, SY_CLS_BIGRAM, bigram_hash(s->prev.h, HASH_EOS), s->prev.p, s->prev.len, NULL, 0);

    memset(f, 0, sizeof(*f));
    d[SY_CLS_D_tokens_log] = lg(tokens, 13);
    d[SY_CLS_D_words_log] = lg((double)s->words, 12);
    if (tokens < 16)
        d[SY_CLS_D_len_lt16] = 1;
    else if (tokens < 64)
        d[SY_CLS_D_len_16_63] = 1;
    else if (tokens < 128)
        d[SY_CLS_D_len_64_127] = 1;
    else if (tokens < 256)
        d[SY_CLS_D_len_128_255] = 1;
    else if (tokens < 512)
        d[SY_CLS_D_len_256_511] = 1;
    else if (tokens < 1024)
        d[SY_CLS_D_len_512_1k] = 1;
    else
        d[SY_CLS_D_len_ge1k] = 1;
    d[SY_CLS_D_turns_extra] = turns > 1 ? log2((double)turns) : 0;
    d[SY_CLS_D_system_log] = lg((double)system_bytes, 13);
    d[SY_CLS_D_lines_log] = lg((double)s->newlines, 8);
    d[SY_CLS_D_code_fences] = lg((double)s->fences, 3);
    d[SY_CLS_D_inline_code] = lg((double)s->backticks, 4);
    d[SY_CLS_D_code_syntax] = cap1(10.0 * (double)s->syntax / sc);
    d[SY_CLS_D_code_words] = lg((double)s->code_words, 5);
    d[SY_CLS_D_latex] = lg((double)s->latex, 5);
    d[SY_CLS_D_math_ops] = lg((double)s->mathops, 6);
    d[SY_CLS_D_digits_share] = cap1(5.0 * (double)s->digits / sc);
    d[SY_CLS_D_numbers_log] = lg((double)s->numbers, 6);
    d[SY_CLS_D_decimals_log] = lg((double)s->decimals, 4);
    d[SY_CLS_D_money_pct] = lg((double)s->money, 4);
    d[SY_CLS_D_questions] = lg((double)s->qmarks, 3);
    d[SY_CLS_D_ends_question] = (s->tail & 0xff) == '?';
    d[SY_CLS_D_wh_start] = s->wh_start;
    d[SY_CLS_D_imperative] = s->imperative;
    d[SY_CLS_D_constraints] = lg((double)s->constraints, 3);
    d[SY_CLS_D_step_by_step] = s->step > 0;
    d[SY_CLS_D_prove] = s->prove > 0;
    d[SY_CLS_D_explain_why] = s->why > 0;
    d[SY_CLS_D_mc_options] = cap1((double)s->mc_lines / 4.0);
    d[SY_CLS_D_answer_cue] = (s->tail & 0xffffffffffffffull) == 0x616e737765723aull;
    d[SY_CLS_D_non_ascii] = (double)s->non_ascii / sc;
    d[SY_CLS_D_cjk] = cap1((double)s->cjk / sc);
    d[SY_CLS_D_cyrillic] = cap1((double)s->cyr / sc);
    d[SY_CLS_D_upper_share] = ascii_letters > 0 ? (double)s->upper / ascii_letters : 0;
    d[SY_CLS_D_word_len] = s->words > 0 ? cap1((double)s->word_bytes / (double)s->words / 10.0) : 0;
    d[SY_CLS_D_long_words] = s->words > 0 ? (double)s->long_words / (double)s->words : 0;
    d[SY_CLS_D_sentences_log] = lg((double)s->sentences, 6);
    /* Length and counts mean different things in a multiple-choice question (long options)
     * and in an open question (more steps): open ones get their own copies. */
    if (!s->mc) {
        d[SY_CLS_D_open] = 1;
        d[SY_CLS_D_open_tokens] = d[SY_CLS_D_tokens_log];
        d[SY_CLS_D_open_words] = d[SY_CLS_D_words_log];
        d[SY_CLS_D_open_numbers] = d[SY_CLS_D_numbers_log];
        d[SY_CLS_D_open_sentences] = d[SY_CLS_D_sentences_log];
    }
    for (int k = 0; k < SY_CLS_NKINDS; k++) {
        f->count[k] = s->count[k];
        f->scale[k] = s->count[k] > 0 ? 1.0 / sqrt((double)s->count[k]) : 0;
    }
}

/* ---- requests ---------------------------------------------------------------------------- */

static size_t content_bytes(const json_t *content)
{
    size_t n = 0;
    if (json_is_string(content))
        return json_string_length(content);
    if (json_is_array(content)) {
        size_t i;
        const json_t *part;
        json_array_foreach (content, i, part) {
            const json_t *t = json_object_get(part, "text");
            if (json_is_string(t))
                n += json_string_length(t);
        }
    }
    return n;
}

/* Runs the pre-pass (<pre>) or the scan over a content: a string, or the text parts of an
 * array, one after the other as separate lines. */
static void walk_content(scan *s, const json_t *content, bool pre)
{
    if (json_is_string(content)) {
        if (pre)
            prepass_text(s, json_string_value(content), json_string_length(content));
        else
            scan_feed(s, json_string_value(content), json_string_length(content));
        return;
    }
    if (!json_is_array(content))
        return;
    size_t i;
    const json_t *part;
    bool first = true;
    json_array_foreach (content, i, part) {
        const json_t *t = json_object_get(part, "text");
        if (!json_is_string(t))
            continue;
        if (pre) {
            prepass_text(s, json_string_value(t), json_string_length(t));
            continue;
        }
        if (!first)
            scan_break(s);
        first = false;
        scan_feed(s, json_string_value(t), json_string_length(t));
    }
}

#define MC_SALT 0x3c6ef372u

/* The whole extraction of one user turn: pre-pass, then the scan. */
static void extract(scan *s, const json_t *content, const char *text, size_t len, size_t turns,
                    size_t system, sy_cls_features *out)
{
    if (content != NULL)
        walk_content(s, content, true);
    else
        prepass_text(s, text, len);
    /* "answer:" is the last 7 normalised bytes */
    s->mc = s->mc_lines >= 2 || (s->tail & 0xffffffffffffffull) == 0x616e737765723aull;
    s->salt = s->mc ? MC_SALT : 0;
    if (content != NULL)
        walk_content(s, content, false);
    else
        scan_feed(s, text, len);
    scan_finish(s, turns, system, out);
}

/* Extracts <request> with the initialised scan <s>. */
static sy_err features(const json_t *request, scan *s, sy_cls_features *out)
{
    size_t turns = 0, system = 0;
    const json_t *msgs, *prompt, *first = NULL;

    if (!json_is_object(request))
        return SY_EINVAL;
    msgs = json_object_get(request, "messages");
    prompt = json_object_get(request, "prompt");
    if (json_is_array(msgs)) {
        size_t i;
        const json_t *m;
        json_array_foreach (msgs, i, m) {
            const char *role = json_string_value(json_object_get(m, "role"));
            const json_t *content = json_object_get(m, "content");
            if (role == NULL)
                continue;
            if (strcmp(role, "user") == 0) {
                if (turns++ == 0)
                    first = content;
            } else if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
                system += content_bytes(content);
            }
        }
    } else if (json_is_string(prompt)) {
        turns = 1;
        first = prompt;
    } else if (json_is_array(prompt) && json_is_string(json_array_get(prompt, 0))) {
        turns = 1;
        first = json_array_get(prompt, 0);
    } else {
        return SY_EINVAL;
    }
    if (first != NULL)
        extract(s, first, NULL, 0, turns, system, out);
    else
        extract(s, NULL, "", 0, turns, system, out);
    return SY_OK;
}

sy_err sy_classifier_features(const json_t *request, sy_cls_features *out, sy_cls_emit_fn emit,
                              void *ctx)
{
    scan s;
    scan_init(&s, emit, ctx);
    return features(request, &s, out);
}

void sy_classifier_features_text(const char *text, size_t len, sy_cls_features *out,
                                 sy_cls_emit_fn emit, void *ctx)
{
    scan s;
    scan_init(&s, emit, ctx);
    extract(&s, NULL, text, len, 1, 0, out);
}

/* ---- names ------------------------------------------------------------------------------- */

static const char *const dense_names[SY_CLS_NDENSE] = {
#define SY_CLS_DENSE_NAME(name, doc) #name,
    SY_CLS_DENSE_MAP(SY_CLS_DENSE_NAME)
#undef SY_CLS_DENSE_NAME
};

const char *sy_classifier_dense_name(size_t i)
{
    return i < SY_CLS_NDENSE ? dense_names[i] : NULL;
}

int sy_classifier_dense_index(const char *name)
{
    for (size_t i = 0; i < SY_CLS_NDENSE; i++)
        if (strcmp(dense_names[i], name) == 0)
            return (int)i;
    return -1;
}

/* Appends normalised bytes to buf[*pos..cap-1), keeping whole valid UTF-8 sequences and
 * writing '?' for anything else that is not printable. */
static void name_put(char *buf, size_t cap, size_t *pos, const char *src, size_t n, bool word,
                     bool show_space)
{
    const unsigned char *p = (const unsigned char *)src;
    if (word && n > WORD_HASH_MAX)
        n = WORD_HASH_MAX;
    for (size_t i = 0; i < n && *pos + 1 < cap;) {
        unsigned char c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n && *pos + len < cap;
        for (size_t j = 1; ok && j < len; j++)
            ok = (p[i + j] & 0xc0) == 0x80;
        if (!ok) {
            buf[(*pos)++] = '?';
            i++;
            continue;
        }
        if (len == 1) {
            unsigned char o = c;
            if (c >= 'A' && c <= 'Z')
                o = (unsigned char)(c + 32);
            else if (c >= '0' && c <= '9')
                o = '0';
            else if (c == ' ')
                o = show_space ? '_' : ' ';
            else if (c < 0x20 || c == 0x7f)
                o = '?';
            buf[(*pos)++] = (char)o;
        } else {
            memcpy(buf + *pos, p + i, len);
            *pos += len;
        }
        i += len;
    }
    buf[*pos] = '\0';
}

void sy_classifier_ngram_name(sy_cls_kind kind, const char *a, size_t alen, const char *b,
                              size_t blen, char *buf, size_t cap)
{
    size_t pos = 0;
    static const char *const prefix[SY_CLS_NKINDS] = {"w:", "b:", "c:"};

    if (cap == 0)
        return;
    buf[0] = '\0';
    if ((int)kind < 0 || kind >= SY_CLS_NKINDS)
        return;
    name_put(buf, cap, &pos, prefix[kind], 2, false, false);
    switch (kind) {
    case SY_CLS_BIGRAM:
        if (a == NULL)
            name_put(buf, cap, &pos, "^", 1, false, false);
        else
            name_put(buf, cap, &pos, a, alen, true, false);
        name_put(buf, cap, &pos, " ", 1, false, false);
        if (b == NULL)
            name_put(buf, cap, &pos, "$", 1, false, false);
        else
            name_put(buf, cap, &pos, b, blen, true, false);
        break;
    case SY_CLS_CHAR:
        name_put(buf, cap, &pos, a, alen, false, true);
        break;
    default:
        name_put(buf, cap, &pos, a, alen, true, false);
        break;
    }
}

/* ---- the model --------------------------------------------------------------------------- */

struct sy_classifier {
    unsigned hash_bits;
    uint32_t mask;
    double bias;
    double threshold;
    double dense[SY_CLS_NDENSE];
    float *hashed; /* 2^hash_bits weights, owned */
    size_t nnz;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Zeroed memory from jansson's allocator: the weights are loaded along with a JSON document,
 * and tests inject allocation failures through json_set_alloc_funcs for both at once. */
static void *cls_alloc(size_t n)
{
    json_malloc_t get;
    json_get_alloc_funcs(&get, NULL);
    void *p = get(n);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

static bool finite_number(const json_t *v, double *out)
{
    if (!json_is_number(v))
        return false;
    *out = json_number_value(v);
    return isfinite(*out);
}

sy_err sy_classifier_parse(const json_t *root, sy_classifier **out, char *err, size_t errlen)
{
    sy_classifier *c = NULL;
    sy_err rc = SY_ECONFIG;
    const json_t *v, *dense, *hashed;
    const char *key;
    json_t *val;

    if (!json_is_object(root)) {
        seterr(err, errlen, "$: the weights file must be a JSON object");
        goto out;
    }
    v = json_object_get(root, "version");
    if (!json_is_integer(v)) {
        seterr(err, errlen, "$.version: missing or not an integer");
        goto out;
    }
    if (json_integer_value(v) != SY_CLS_VERSION) {
        seterr(err, errlen, "$.version: unsupported version %lld (this build reads %d)",
               (long long)json_integer_value(v), SY_CLS_VERSION);
        goto out;
    }
    v = json_object_get(root, "kind");
    if (!json_is_string(v) || strcmp(json_string_value(v), "logreg") != 0) {
        seterr(err, errlen, "$.kind: must be \"logreg\"");
        goto out;
    }
    v = json_object_get(root, "features");
    if (!json_is_string(v) || strcmp(json_string_value(v), SY_CLS_FEATURES) != 0) {
        seterr(err, errlen, "$.features: must be \"%s\" (weights trained for other features)",
               SY_CLS_FEATURES);
        goto out;
    }
    v = json_object_get(root, "hash_bits");
    if (!json_is_integer(v) || json_integer_value(v) < SY_CLS_HASH_BITS_MIN ||
        json_integer_value(v) > SY_CLS_HASH_BITS_MAX) {
        seterr(err, errlen, "$.hash_bits: must be an integer in [%d, %d]", SY_CLS_HASH_BITS_MIN,
               SY_CLS_HASH_BITS_MAX);
        goto out;
    }
    rc = SY_ENOMEM;
    c = cls_alloc(sizeof(*c));
    if (c == NULL)
        goto out;
    c->hash_bits = (unsigned)json_integer_value(v);
    c->mask = (uint32_t)((1u << c->hash_bits) - 1);
    c->hashed = cls_alloc(((size_t)1 << c->hash_bits) * sizeof(float));
    if (c->hashed == NULL)
        goto out;
    rc = SY_ECONFIG;
    if (!finite_number(json_object_get(root, "bias"), &c->bias)) {
        seterr(err, errlen, "$.bias: missing or not a finite number");
        goto out;
    }
    if (!finite_number(json_object_get(root, "threshold"), &c->threshold) || c->threshold < 0 ||
        c->threshold > 1) {
        seterr(err, errlen, "$.threshold: missing or not a number in [0, 1]");
        goto out;
    }
    dense = json_object_get(root, "dense");
    if (!json_is_object(dense)) {
        seterr(err, errlen, "$.dense: missing or not an object");
        goto out;
    }
    json_object_foreach ((json_t *)dense, key, val) {
        int i = sy_classifier_dense_index(key);
        if (i < 0) {
            seterr(err, errlen, "$.dense.%s: unknown feature", key);
            goto out;
        }
        if (!finite_number(val, &c->dense[i])) {
            seterr(err, errlen, "$.dense.%s: not a finite number", key);
            goto out;
        }
    }
    hashed = json_object_get(root, "hashed");
    if (!json_is_object(hashed)) {
        seterr(err, errlen, "$.hashed: missing or not an object");
        goto out;
    }
    json_object_foreach ((json_t *)hashed, key, val) {
        char *end;
        double w;
        errno = 0;
        unsigned long b = strtoul(key, &end, 10);
        if (key[0] < '0' || key[0] > '9' || *end != '\0' || errno != 0 || b > c->mask) {
            seterr(err, errlen, "$.hashed.%s: not a bucket number below 2^%u", key, c->hash_bits);
            goto out;
        }
        if (!finite_number(val, &w)) {
            seterr(err, errlen, "$.hashed.%s: not a finite number", key);
            goto out;
        }
        if (c->hashed[b] == 0.0f && w != 0.0)
            c->nnz++;
        c->hashed[b] = (float)w;
    }
    *out = c;
    c = NULL; /* the caller owns it now */
    rc = SY_OK;
out:
    sy_classifier_free(c);
    return rc;
}

sy_err sy_classifier_load(const char *path, sy_classifier **out, char *err, size_t errlen)
{
    json_error_t jerr;
    char msg[256] = "";
    sy_err rc = SY_ECONFIG;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);

    if (root == NULL) {
        seterr(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        goto out;
    }
    rc = sy_classifier_parse(root, out, msg, sizeof(msg));
    if (rc == SY_ECONFIG)
        seterr(err, errlen, "%s: %s", path, msg);
    else if (rc == SY_ENOMEM)
        seterr(err, errlen, "%s: out of memory", path);
out:
    json_decref(root);
    return rc;
}

void sy_classifier_free(sy_classifier *c)
{
    json_free_t release;

    if (c == NULL)
        return;
    json_get_alloc_funcs(NULL, &release);
    release(c->hashed);
    release(c);
}

double sy_classifier_threshold(const sy_classifier *c)
{
    return c->threshold;
}

unsigned sy_classifier_hash_bits(const sy_classifier *c)
{
    return c->hash_bits;
}

size_t sy_classifier_nnz(const sy_classifier *c)
{
    return c->nnz;
}

double sy_classifier_logit(const sy_classifier *c, const sy_cls_features *f,
                           const double hsum[SY_CLS_NKINDS])
{
    double z = c->bias;
    for (size_t i = 0; i < SY_CLS_NDENSE; i++)
        z += c->dense[i] * f->dense[i];
    for (int k = 0; k < SY_CLS_NKINDS; k++)
        z += f->scale[k] * hsum[k];
    return z;
}

/* ---- scoring ----------------------------------------------------------------------------- */

#define TRACK_SLOTS 1024 /* power of two, twice TRACK_MAX */
#define TRACK_MAX 512

/* One distinct (kind, bucket) met while scoring, for the explanation. Distinct n-grams of one
 * kind that share a bucket share a weight: they are summed and named after the first seen. */
typedef struct track {
    const char *a, *b;
    uint32_t key; /* kind << 24 | bucket */
    uint16_t alen, blen;
    char gram[4];
    double raw; /* sum of weights over occurrences; times scale[kind] gives the contribution */
} track;

typedef struct score_ctx {
    const sy_classifier *c;
    double sum[SY_CLS_NKINDS];
    uint16_t *slot; /* TRACK_SLOTS; 0 = empty, else 1 + index into tab; NULL = no explanation */
    track *tab;
    size_t ntab;
} score_ctx;

static void score_emit(void *ctx, sy_cls_kind kind, uint32_t hash, const char *a, size_t alen,
                       const char *b, size_t blen)
{
    score_ctx *s = ctx;
    uint32_t bucket = hash & s->c->mask;
    float w = s->c->hashed[bucket];

    if (w == 0.0f)
        return;
    s->sum[kind] += w;
    if (s->slot == NULL)
        return;
    uint32_t key = (uint32_t)kind << 24 | bucket;
    size_t j = fmix32(key) & (TRACK_SLOTS - 1);
    while (s->slot[j] != 0 && s->tab[s->slot[j] - 1].key != key)
        j = (j + 1) & (TRACK_SLOTS - 1);
    if (s->slot[j] == 0) {
        if (s->ntab >= TRACK_MAX)
            return; /* still counted in the score, just not explained */
        track *t = &s->tab[s->ntab++];
        s->slot[j] = (uint16_t)s->ntab;
        t->key = key;
        t->raw = 0;
        t->a = a;
        t->b = b;
        t->alen = (uint16_t)(alen > WORD_HASH_MAX ? WORD_HASH_MAX : alen);
        t->blen = (uint16_t)(blen > WORD_HASH_MAX ? WORD_HASH_MAX : blen);
        if (kind == SY_CLS_CHAR) {
            memcpy(t->gram, a, 4); /* <a> is the caller's scratch */
            t->a = NULL;
        }
    }
    s->tab[s->slot[j] - 1].raw += w;
}

typedef struct cand {
    double contrib;
    int dense;      /* dense index, or -1 */
    const track *t; /* when dense < 0 */
} cand;

static void top_insert(cand *best, size_t ntop, size_t *nbest, cand x)
{
    double ax = fabs(x.contrib);
    if (ax == 0.0)
        return;
    if (*nbest == ntop && fabs(best[ntop - 1].contrib) >= ax)
        return;
    size_t i = *nbest < ntop ? (*nbest)++ : ntop - 1;
    while (i > 0 && fabs(best[i - 1].contrib) < ax) {
        best[i] = best[i - 1];
        i--;
    }
    best[i] = x;
}

#define TOP_MAX 64

sy_err sy_classifier_score(const sy_classifier *c, const json_t *request, double *score,
                           sy_feature_contrib *top, size_t ntop)
{
    uint16_t slot[TRACK_SLOTS];
    track tab[TRACK_MAX];
    score_ctx sc = {.c = c};
    sy_cls_features f;
    sy_err rc;

    scan s;

    if (top != NULL && ntop > 0) {
        memset(slot, 0, sizeof(slot));
        sc.slot = slot;
        sc.tab = tab;
        scan_init(&s, score_emit, &sc);
    } else {
        scan_init(&s, NULL, NULL);
        s.weights = c->hashed;
        s.mask = c->mask;
    }
    rc = features(request, &s, &f);
    if (rc != SY_OK)
        return rc;
    if (sc.slot == NULL)
        memcpy(sc.sum, s.wsum, sizeof(sc.sum));
    double z = sy_classifier_logit(c, &f, sc.sum);
    *score = 1.0 / (1.0 + exp(-z));
    if (sc.slot == NULL)
        return SY_OK;

    cand best[TOP_MAX];
    size_t nbest = 0, want = ntop < TOP_MAX ? ntop : TOP_MAX;
    for (size_t i = 0; i < SY_CLS_NDENSE; i++)
        top_insert(best, want, &nbest, (cand){c->dense[i] * f.dense[i], (int)i, NULL});
    for (size_t j = 0; j < sc.ntab; j++)
        top_insert(best, want, &nbest, (cand){tab[j].raw * f.scale[tab[j].key >> 24], -1, &tab[j]});
    for (size_t i = 0; i < ntop; i++) {
        top[i].name[0] = '\0';
        top[i].contribution = 0;
        if (i >= nbest)
            continue;
        top[i].contribution = best[i].contrib;
        if (best[i].dense >= 0) {
            (void)snprintf(top[i].name, sizeof(top[i].name), "%s", dense_names[best[i].dense]);
        } else {
            const track *t = best[i].t;
            sy_cls_kind kind = (sy_cls_kind)(t->key >> 24);
            if (kind == SY_CLS_CHAR)
                sy_classifier_ngram_name(kind, t->gram, 4, NULL, 0, top[i].name,
                                         sizeof(top[i].name));
            else
                sy_classifier_ngram_name(kind, t->a, t->alen, t->b, t->blen, top[i].name,
                                         sizeof(top[i].name));
        }
    }
    return SY_OK;
}
