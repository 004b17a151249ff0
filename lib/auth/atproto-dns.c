/* The DNS step of AT Protocol handle resolution: TXT "_atproto.HANDLE".
 *
 * libresolv's res_nquery with a private resolver state per call (no global
 * state, so any thread may call it); the operator's resolv.conf unless the
 * configuration names a server (tests serve the TXT records on loopback).
 * Any failure to get an answer falls back to the HTTPS method, which is
 * why an unreachable server is "not found" here and not an error; a
 * server that answers nonsense is an error.
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/atproto-internal.h"

/* Largest DNS answer read: TXT records of one name are small; 4 KiB also
 * covers a TCP retry's answer for a handful of records. */
#define DNS_ANSWER_MAX 4096

static int use_server(struct __res_state *st, const char *server, pe_err *err)
{
    const char *colon = strrchr(server, ':');
    char addr[INET_ADDRSTRLEN] = "";
    unsigned long port = 0;
    char *end = NULL;

    if (colon == NULL || (size_t)(colon - server) >= sizeof addr)
        return pe_err_set(err, PE_EINVAL, 0, "DNS server %s: not IPV4:PORT", server);
    memcpy(addr, server, (size_t)(colon - server));
    port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port == 0 || port > 65535 ||
        inet_pton(AF_INET, addr, &st->nsaddr_list[0].sin_addr) != 1)
        return pe_err_set(err, PE_EINVAL, 0, "DNS server %s: not IPV4:PORT", server);
    st->nsaddr_list[0].sin_family = AF_INET;
    st->nsaddr_list[0].sin_port = htons((uint16_t)port);
    st->nscount = 1;
    return 0;
}

/* One TXT rdata: a sequence of <length><bytes> strings, joined (a long
 * value may be split). 1 with the DID in did when it starts "did=". */
static int txt_did(const unsigned char *rd, size_t len, char *did, size_t n)
{
    char txt[512];
    size_t used = 0;

    for (size_t i = 0; i < len;) {
        size_t part = rd[i++];
        if (part > len - i || part >= sizeof txt - used)
            return 0;
        memcpy(txt + used, rd + i, part);
        used += part;
        i += part;
    }
    txt[used] = '\0';
    if (used < 4 || memcmp(txt, "did=", 4) != 0 || used - 4 >= n)
        return 0;
    memcpy(did, txt + 4, used - 4 + 1);
    return 1;
}

static int parse_answer(const unsigned char *ans, int len, const char *name,
                        char did[PE_AUTH_DID_MAX], pe_err *err)
{
    char got[PE_AUTH_DID_MAX];
    int found = 0;
    ns_msg msg;
    ns_rr rr;

    if (ns_initparse(ans, len, &msg) < 0)
        return pe_err_set(err, PE_EREMOTE, 0, "DNS TXT %s: malformed answer", name);
    for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
        if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
            return pe_err_set(err, PE_EREMOTE, 0, "DNS TXT %s: malformed record", name);
        if (ns_rr_type(rr) != ns_t_txt ||
            !txt_did(ns_rr_rdata(rr), ns_rr_rdlen(rr), got, sizeof got))
            continue;
        if (!pe_atproto_did_valid(got))
            return pe_err_set(err, PE_EREMOTE, 0, "DNS TXT %s: \"did=\" names no valid DID", name);
        if (found && strcmp(got, did) != 0)
            return pe_err_set(err, PE_EREMOTE, 0, "DNS TXT %s: two different DIDs", name);
        memcpy(did, got, sizeof got);
        found = 1;
    }
    return found;
}

int pe__atproto_dns_did(const pe_atproto_cfg *cfg, const char *handle, char did[PE_AUTH_DID_MAX],
                        pe_err *err)
{
    unsigned char ans[DNS_ANSWER_MAX];
    struct __res_state st;
    char name[PE_ATPROTO_HANDLE_MAX + 16];
    long timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : PE_ATPROTO_TIMEOUT_MS_DEFAULT;
    int len, rc;

    if (cfg->dns_server != NULL && strcmp(cfg->dns_server, "off") == 0)
        return 0;
    snprintf(name, sizeof name, "_atproto.%s", handle);
    memset(&st, 0, sizeof st);
    if (res_ninit(&st) != 0)
        return 0;
    if (cfg->dns_server != NULL && use_server(&st, cfg->dns_server, err) < 0) {
        res_nclose(&st);
        return -1;
    }
    /* libresolv counts in whole seconds: one try per server, the deadline
     * rounded up, so a silent server costs at most the deadline. */
    st.retrans = (int)((timeout_ms + 999) / 1000);
    st.retry = 1;
    len = res_nquery(&st, name, ns_c_in, ns_t_txt, ans, sizeof ans);
    res_nclose(&st);
    if (len < 0)
        return 0; /* NXDOMAIN, no data, no server: try HTTPS */
    if (len > (int)sizeof ans)
        return pe_err_set(err, PE_EREMOTE, 0, "DNS TXT %s: answer too large", name);
    rc = parse_answer(ans, len, name, did, err);
    return rc;
}
