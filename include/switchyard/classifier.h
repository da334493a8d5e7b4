/* classifier: scores an OpenAI chat request in [0,1], "how much does this need the flagship",
 * with a logistic model over dense text features and hashed word/character n-grams, and explains
 * the score by its top contributing features. Weights are a versioned JSON file in routes/
 * (written by `switchyard train`). Extraction and scoring are pure: no I/O, no allocation
 * (a fixed scratch on the stack), bounded work per request. */
#ifndef SY_CLASSIFIER_H
#define SY_CLASSIFIER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/err.h"

/* The weights-file format version and the feature-extractor id a file must carry. Changing
 * what any feature means bumps SY_CLS_FEATURES so stale weights are refused at load. */
#define SY_CLS_VERSION 1
#define SY_CLS_FEATURES "sy-cls-1"
#define SY_CLS_HASH_BITS_MIN 8
#define SY_CLS_HASH_BITS_MAX 24

/* Bytes of the first user turn scanned for n-grams and counted features; longer turns are
 * still measured by their full length (tokens_log, len_* bins). Bounds the work per request. */
#define SY_CLS_SCAN_MAX 16384

/* Longest feature name reported by sy_classifier_score, NUL included. */
#define SY_CLS_NAME_MAX 48

/* The dense features: X(name, what it measures). Values are scaled to roughly [0,1].
 * The order is the index (SY_CLS_D_<name>); names are what weights files and explanations use. */
/* clang-format off */
#define SY_CLS_DENSE_MAP(X)                                                                   \
    X(tokens_log, "log2(1 + bytes/4) / 13 over the whole first user turn")                   \
    X(words_log, "log2(1 + words) / 12")                                                      \
    X(len_lt16, "estimated tokens < 16")                                                      \
    X(len_16_63, "estimated tokens 16..63")                                                   \
    X(len_64_127, "estimated tokens 64..127")                                                 \
    X(len_128_255, "estimated tokens 128..255")                                               \
    X(len_256_511, "estimated tokens 256..511")                                               \
    X(len_512_1k, "estimated tokens 512..1023")                                               \
    X(len_ge1k, "estimated tokens >= 1024")                                                   \
    X(turns_extra, "log2(user turns), 0 for a single turn")                                   \
    X(system_log, "log2(1 + system/developer prompt bytes) / 13")                             \
    X(lines_log, "log2(1 + newlines) / 8")                                                    \
    X(code_fences, "log2(1 + ``` fences) / 3")                                                \
    X(inline_code, "log2(1 + ` quotes) / 4")                                                  \
    X(code_syntax, "share of {}[]();<>=#|& bytes x 10, capped at 1")                          \
    X(code_words, "log2(1 + code keywords such as def, return, #include) / 5")               \
    X(latex, "log2(1 + LaTeX markers: \\command, $, ^, _{) / 5")                              \
    X(math_ops, "log2(1 + + * / = ^ < > bytes) / 6")                                          \
    X(digits_share, "share of digit bytes x 5, capped at 1")                                  \
    X(numbers_log, "log2(1 + numbers) / 6")                                                   \
    X(decimals_log, "log2(1 + decimals and fractions like 2.5, 3/4) / 4")                     \
    X(money_pct, "log2(1 + $N and N%) / 4")                                                   \
    X(questions, "log2(1 + '?') / 3")                                                         \
    X(ends_question, "the turn ends with '?'")                                                \
    X(wh_start, "the first word is a question word (what, how, is, can...)")                  \
    X(imperative, "the first word (after 'please') is an imperative verb (write, explain...)")  \
    X(constraints, "log2(1 + constraint phrases: at least, exactly, must, without, ...) / 3") \
    X(step_by_step, "'step by step' or 'show your work'")                                     \
    X(prove, "prove, derive, justify, show that")                                            \
    X(explain_why, "'explain why' or 'why'")                                                  \
    X(mc_options, "multiple-choice option lines (A. B) (C) ...) / 4, capped at 1")            \
    X(answer_cue, "the turn ends with 'Answer:'")                                             \
    X(non_ascii, "share of non-ASCII bytes")                                                  \
    X(cjk, "share of CJK bytes")                                                              \
    X(cyrillic, "share of Cyrillic bytes")                                                    \
    X(upper_share, "share of uppercase among ASCII letters")                                  \
    X(word_len, "mean word length / 10, capped at 1")                                         \
    X(long_words, "share of words of 10+ characters")                                         \
    X(sentences_log, "log2(1 + sentence ends) / 6")                                           \
    X(open, "not a multiple-choice question (no option lines, no 'Answer:' cue)")            \
    X(open_tokens, "tokens_log of an open question (0 for multiple choice)")                  \
    X(open_words, "words_log of an open question")                                            \
    X(open_numbers, "numbers_log of an open question")                                        \
    X(open_sentences, "sentences_log of an open question")
/* clang-format on */

typedef enum sy_cls_dense {
#define SY_CLS_DENSE_ENUM(name, doc) SY_CLS_D_##name,
    SY_CLS_DENSE_MAP(SY_CLS_DENSE_ENUM)
#undef SY_CLS_DENSE_ENUM
        SY_CLS_NDENSE
} sy_cls_dense;

/* Hashed n-gram kinds. All kinds share one weight table of 2^hash_bits buckets (each kind
 * hashes with its own seed). Names: "w:word", "b:word word" (^ and $ mark the start and end
 * of the turn), "c:abcd" (4 bytes of the normalised text; '_' shows a space). Words and
 * character grams are lower-cased (ASCII) and every digit reads as '0'. */
typedef enum sy_cls_kind { SY_CLS_WORD = 0, SY_CLS_BIGRAM, SY_CLS_CHAR, SY_CLS_NKINDS } sy_cls_kind;

/* What one request looks like to the model. Every occurrence of a hashed n-gram of kind k adds
 * scale[k] (= 1/sqrt(count[k])) at its bucket. */
typedef struct sy_cls_features {
    double dense[SY_CLS_NDENSE];
    double scale[SY_CLS_NKINDS];
    size_t count[SY_CLS_NKINDS];
} sy_cls_features;

/* Called once per hashed n-gram occurrence with its 32-bit hash (bucket = hash & (2^bits - 1)).
 * <a>/<alen> and, for bigrams, <b>/<blen> are the n-gram's parts as they appear in the request
 * (borrowed, valid only during the call; NULL/0 for a start/end marker). For SY_CLS_CHAR, <a>
 * points at the 4 normalised bytes. Use sy_classifier_ngram_name to print them. */
typedef void (*sy_cls_emit_fn)(void *ctx, sy_cls_kind kind, uint32_t hash, const char *a,
                               size_t alen, const char *b, size_t blen);

/* One explained feature: its name ("tokens_log", "w:prove", "b:step by", "c:_sqr") and its
 * contribution (weight x value) to the logit. */
typedef struct sy_feature_contrib {
    char name[SY_CLS_NAME_MAX];
    double contribution;
} sy_feature_contrib;

typedef struct sy_classifier sy_classifier;

/* Extracts the features of <request> (an OpenAI chat body, borrowed): the first user turn
 * (string content, or the text parts of an array content), the number of user turns and the
 * bytes of system/developer messages. A body with "prompt" (completions) and no "messages"
 * uses the prompt. Calls <emit> (may be NULL) for each hashed n-gram. Returns SY_EINVAL when
 * the body is not an object or has neither messages nor prompt; a body without a user turn
 * scores as empty text. Pure, thread-safe, no allocation. */
sy_err sy_classifier_features(const json_t *request, sy_cls_features *out, sy_cls_emit_fn emit,
                              void *ctx);

/* The same over raw text (one user turn, no system prompt). */
void sy_classifier_features_text(const char *text, size_t len, sy_cls_features *out,
                                 sy_cls_emit_fn emit, void *ctx);

/* Name of dense feature <i> (< SY_CLS_NDENSE), or NULL. */
const char *sy_classifier_dense_name(size_t i);
/* Index of the dense feature called <name>, or -1. */
int sy_classifier_dense_index(const char *name);

/* Writes the printable name of an n-gram reported by an emit callback into <buf> (always
 * NUL-terminated, truncated to <cap>; invalid UTF-8 shows as '?'). */
void sy_classifier_ngram_name(sy_cls_kind kind, const char *a, size_t alen, const char *b,
                              size_t blen, char *buf, size_t cap);

/* Builds a classifier from a parsed weights document (borrowed):
 *   {"version":1, "kind":"logreg", "features":"sy-cls-1", "hash_bits":18, "bias":b,
 *    "threshold":t in [0,1], "dense":{"name":w,...}, "hashed":{"bucket":w,...},
 *    "trained_on":{...} (optional, kept for reports)}
 * Dense names must be known (missing ones weigh 0); buckets are decimal integers below
 * 2^hash_bits; every weight is a finite number. On failure returns SY_ECONFIG and writes one
 * line naming the JSON path into <err> (may be NULL). *out is a new classifier on success. */
sy_err sy_classifier_parse(const json_t *root, sy_classifier **out, char *err, size_t errlen);

/* Reads and parses the weights file at <path> (start-up/reload code, not the request path).
 * SY_ECONFIG with a message "<path>: ..." on unreadable or invalid files, SY_ENOMEM on OOM. */
sy_err sy_classifier_load(const char *path, sy_classifier **out, char *err, size_t errlen);

void sy_classifier_free(sy_classifier *c);

/* The threshold stored in the weights file (score >= threshold -> the flagship tier). */
double sy_classifier_threshold(const sy_classifier *c);
unsigned sy_classifier_hash_bits(const sy_classifier *c);
/* Number of non-zero hashed weights. */
size_t sy_classifier_nnz(const sy_classifier *c);

/* Scores <request> (borrowed): *score = sigmoid(bias + sum of contributions), in [0,1].
 * When <top> is not NULL, fills top[0..ntop) with the features of largest |contribution|,
 * largest first; unused entries get an empty name and 0. Repeated n-grams are summed per
 * bucket (the first 512 distinct non-zero buckets are tracked for explanations; the score
 * always counts all). Errors as sy_classifier_features. Pure, thread-safe on a shared
 * classifier, no allocation. */
sy_err sy_classifier_score(const sy_classifier *c, const json_t *request, double *score,
                           sy_feature_contrib *top, size_t ntop);

/* The logit for features already extracted with hashed sums <hsum>[kind] (sum of weights of
 * every occurrence of that kind): bias + dense . w + sum_k scale[k] * hsum[k]. */
double sy_classifier_logit(const sy_classifier *c, const sy_cls_features *f,
                           const double hsum[SY_CLS_NKINDS]);

#endif
