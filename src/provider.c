/* provider: the registry of wire protocols, and the OpenAI-compatible one's ops (its pure
 * functions live in provider_openai.c). */
#include "switchyard/provider.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "provider_int.h"
#include "switchyard/json_util.h"
#include "switchyard/provider_anthropic.h"
#include "switchyard/sse.h"

static sy_err openai_url(const sy_deployment *d, sy_endpoint ep, char *url, size_t n)
{
    int k = snprintf(url, n, "%s%s", d->base_url, sy_openai_path(ep));
    return k < 0 || (size_t)k >= n ? SY_EINVAL : SY_OK;
}

static char *openai_body(const sy_deployment *d, sy_endpoint ep, const json_t *body, bool stream,
                         size_t *len, char *msg, size_t msglen)
{
    (void)msg;
    (void)msglen;
    return sy_openai_upstream_body(d, ep, body, stream, len);
}

sy_err sy_provider_emit(sy_buf *out, const json_t *j)
{
    size_t n;
    char *s = j != NULL ? sy_json_dump(j, &n) : NULL;
    if (s == NULL)
        return SY_ENOMEM;
    sy_err rc = sy_sse_frame(out, s, n);
    free(s);
    return rc;
}

json_t *sy_provider_chunk_shell(sy_endpoint ep, json_t *id, json_t *created, json_t *model,
                                json_t *fingerprint)
{
    json_t *c = json_object();
    if (c == NULL)
        return NULL;
    /* json_object_set refuses a NULL value: that member is left out */
    json_object_set(c, "id", id);
    const char *object = ep == SY_EP_CHAT ? "chat.completion.chunk" : "text_completion";
    json_object_set_new(c, "object", json_string(object));
    json_object_set(c, "created", created);
    json_object_set(c, "model", model);
    if (fingerprint != NULL)
        json_object_set(c, "system_fingerprint", fingerprint);
    json_object_set_new(c, "choices", json_array());
    return c;
}

bool sy_slist_add(struct curl_slist **l, const char *s)
{
    struct curl_slist *n = curl_slist_append(*l, s);
    if (n == NULL) {
        curl_slist_free_all(*l);
        *l = NULL;
        return false;
    }
    *l = n;
    return true;
}

static struct curl_slist *openai_headers(const sy_deployment *d, struct curl_slist *h)
{
    char auth[1100];
    if (d->api_key == NULL)
        return h;
    if (snprintf(auth, sizeof(auth), "Authorization: Bearer %s", d->api_key) >= (int)sizeof(auth))
        return h;
    sy_slist_add(&h, auth); /* curl copies the string; NULL (list freed) when out of memory */
    explicit_bzero(auth, sizeof(auth));
    return h;
}

static sy_err openai_normalize(sy_endpoint ep, json_t **resp, bool embed_b64, char *msg,
                               size_t msglen)
{
    return sy_openai_normalize(ep, *resp, embed_b64, msg, msglen);
}

static sy_err openai_stream_event(sy_stream_fix *f, sy_endpoint ep, const char *event,
                                  const char *data, size_t len, sy_buf *out)
{
    (void)event;
    return sy_openai_stream_event(f, ep, data, len, out);
}

const sy_provider_ops sy_provider_openai = {
    .name = "openai",
    .url = openai_url,
    .body = openai_body,
    .headers = openai_headers,
    .normalize = openai_normalize,
    .stream_event = openai_stream_event,
    .wrap_error = sy_openai_wrap_error,
};

const sy_provider_ops *sy_provider_get(sy_provider p)
{
    switch (p) {
    case SY_PROVIDER_OPENAI:
        return &sy_provider_openai;
    case SY_PROVIDER_ANTHROPIC:
        return &sy_provider_anthropic;
    }
    return NULL;
}
