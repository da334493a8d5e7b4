/* prices: the price list (conf/prices.json) and the cost arithmetic (DESIGN §4, §7).
 *
 * The one design decision: money is integer micro-dollars everywhere past this module. Prices
 * (USD per million tokens, i.e. micro-dollars per token) are turned into integer pico-dollars per
 * token, a request's cost is summed exactly in 128-bit integers and rounded once, half up, to
 * micro-dollars. Totals are sums of those integers, so /v1/spend, /metrics, the access log and the
 * x-switchyard-cost-usd header agree to the last micro-dollar.
 *
 * ---- conf/prices.json ---------------------------------------------------------------------
 *   {"unit": "USD per million tokens",
 *    "models": {"gpt-4.1": {"input": 2, "cached_input": 0.5, "output": 8, "batch_discount": 0.5},
 *               "claude-sonnet-4": {"input": 3, "cached_input": 0.3, "cache_write": 3.75, ...},
 *               "qwen2.5": {"input": 0, "output": 0}, ...}}
 * Each entry has the keys of a deployment's `price` (input and output required; cached_input and
 * cache_write default to input; batch_discount to 0). Other top-level keys starting with "_" and
 * "unit"/"updated" are comments. Unknown keys are errors naming their path.
 *
 * ---- lookup (sy_prices_lookup) --------------------------------------------------------------
 * 1. the exact model name; 2. the longest entry that is a prefix of the model name and ends at a
 * boundary (the model's next character is one of "-:@._/" ), e.g. "gpt-4.1-mini-2025-04-14"
 * -> "gpt-4.1-mini", "qwen2.5:7b-instruct" -> "qwen2.5"; 3. both again on the part after the
 * last '/' ("openai/gpt-4o" -> "gpt-4o", "meta-llama/Llama-3.1-8B" -> "Llama-3.1-8B"). Matching
 * is case-sensitive. A model that matches nothing has no price: `switchyard check` fails. */
#ifndef SY_PRICES_H
#define SY_PRICES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "switchyard/config.h"
#include "switchyard/err.h"

/* Token counts of one request, as the upstream reported them (or as estimated). */
typedef struct sy_usage {
    int64_t prompt;      /* all prompt tokens: cached and cache_write included */
    int64_t cached;      /* prompt tokens read from the provider's prompt cache */
    int64_t cache_write; /* prompt tokens written to the provider's prompt cache (Anthropic) */
    int64_t completion;  /* all completion tokens: reasoning included */
    int64_t reasoning;   /* completion tokens spent on reasoning (already in completion) */
    bool estimated;      /* no usage from the upstream: counted from the bytes relayed */
} sy_usage;

/* Cost of <u> at <p> in micro-dollars:
 *   uncached = max(0, prompt - cached - cache_write)
 *   output   = max(completion, reasoning)
 *   pico     = uncached*input + cached*cached_input + cache_write*cache_write_rate
 *              + output*output_rate           (rates as integer pico-dollars per token)
 *   batch:     pico *= (1 - batch_discount)   (the discount as integer parts per million)
 *   micro    = pico / 10^6 rounded half up (one rounding, at the end)
 * Negative counts are taken as 0. Never fails; saturates at INT64_MAX. Pure, thread-safe. */
int64_t sy_price_cost_micro(const sy_price *p, const sy_usage *u, bool batch);

/* The exact decimal USD of <micro> micro-dollars, always six decimals ("0.000150", "12.345678",
 * "-0.000001"), NUL-terminated in <buf>. Returns <buf>. For x-switchyard-cost-usd and logs. */
#define SY_USD_BUF 32
char *sy_usd_format(int64_t micro, char buf[SY_USD_BUF]);

/* A loaded price list. Immutable once built; safe to read from any thread. */
typedef struct sy_prices sy_prices;

/* A prices file larger than this many bytes is refused ("<path>: larger than N bytes"). */
#define SY_PRICES_MAX_BYTES (4u << 20)

/* Loads and validates the file at <path>. Each problem is one line in <errs> starting with
 * "<path>: " and its JSON path (`conf/prices.json: models.gpt-4.1.output: must be a number >= 0`).
 * Returns SY_OK and a new list, SY_ECONFIG (problems listed; *out untouched) or SY_ENOMEM.
 * Memory comes from jansson's allocator (json_set_alloc_funcs reaches it, as in config.c). */
sy_err sy_prices_load(const char *path, sy_prices **out, sy_errlist *errs);
/* The same on a parsed document; <name> prefixes error lines (NULL = "prices"). */
sy_err sy_prices_parse(const json_t *root, const char *name, sy_prices **out, sy_errlist *errs);
void sy_prices_free(sy_prices *p); /* NULL is a no-op */

size_t sy_prices_count(const sy_prices *p);

/* Looks <model> up (rules at the top of this file). On a match writes the price (with
 * .set = false: it came from the list) to <out> and, when <matched> is not NULL, the entry's
 * name (borrowed from <p>) to *matched; returns true. False when nothing matches. */
bool sy_prices_lookup(const sy_prices *p, const char *model, sy_price *out, const char **matched);

/* Gives every deployment of <cfg> without an explicit `price` the list's price for its model.
 * Each deployment left unpriced is one line in <errs>:
 *   "deployments[3].price: no price for model 'foo' (add \"price\" to the deployment or an entry
 *    to conf/prices.json; 0 must be explicit)"
 * Returns the number of such lines. Used by sy_config_load; <p> may be NULL (no list). */
size_t sy_prices_apply(const sy_prices *p, const char *list_path, sy_config *cfg, sy_errlist *errs);

#endif
