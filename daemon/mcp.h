/* The daemon's MCP server (Model Context Protocol): what its transport
 * (mcp.c: streamable HTTP at /mcp, sessions, JSON-RPC) and its tools
 * (mcp-tools.c) share. Loop thread only. */
#ifndef PE_DAEMON_MCP_H
#define PE_DAEMON_MCP_H

#include <jansson.h>

#include "daemon.h"

typedef struct pe_mcp_session pe_mcp_session;
typedef struct pe_mcp_call pe_mcp_call;

/* One tools/call in flight. The transport fills the first fields and
 * answers with finish; the tool keeps its own state in step/state. */
struct pe_mcp_call {
    pe_daemon *d;
    pe_mcp_session *session;
    char *authorization; /* the caller's header, for the XRPC handlers' checks */
    char *did;           /* the caller */
    json_t *args;        /* the tool's arguments (an object) */
    const struct pe_mcp_tool *tool;
    /* the tool's */
    void (*next)(pe_mcp_call *c, json_t *out, unsigned status, const char *ename, const char *msg);
    json_t *state;
    int step;
    /* the transport's: the result (a CallToolResult, stolen), once */
    void (*finish)(pe_mcp_call *c, json_t *result);
    /* the transport's: a progress notification, when the client asked for them */
    void (*progress)(pe_mcp_call *c, double progress, const char *message);
    /* the tool's, optional: the client cancelled the call (stop what runs;
     * finish is still called, and its answer is not sent) */
    void (*cancel)(pe_mcp_call *c);
    void *transport;
};

typedef struct pe_mcp_tool {
    const char *name;
    const char *description;
    const char *schema; /* JSON Schema of the arguments */
    void (*start)(pe_mcp_call *c);
} pe_mcp_tool;

/* tools/list's answer (new reference). */
json_t *pe__mcp_tools_list(void);
/* Start tools/call of name: -1 when there is no such tool (nothing
 * called), else 0 and c->finish runs exactly once, later. */
int pe__mcp_tool_start(pe_mcp_call *c, const char *name);

/* Run fn(c) in secs (a timer on the loop): for tools that poll. */
void pe__mcp_later(pe_mcp_call *c, double secs, void (*fn)(pe_mcp_call *c));

/* Output of an exec kept for paging (read_output): an id for it, or
 * NULL when the session keeps none (the oldest is dropped past a bound). */
char *pe__mcp_output_put(pe_mcp_session *s, json_t *stdout_text, json_t *stderr_text);
/* The kept output's text of stream ("stdout"/"stderr"), borrowed; NULL if gone. */
json_t *pe__mcp_output_get(pe_mcp_session *s, const char *id, const char *stream);

#endif
