/* The HTTP server end to end, in process: the loop runs on a thread, the
 * test talks raw HTTP/1.1 to 127.0.0.1 over sockets. Covers routing, the
 * XRPC error for each validation failure, CORS, limits, rate limiting,
 * deferred answers, concurrency, hostile input, and the protocol edge
 * cases in tests/data/http/ (one raw request and its expected answer per
 * file, STYLE rule 18). Loopback only. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "task.h"
#include "pocketenv/http.h"

struct fixture {
    pe_ev_loop *loop;
    pe_http_server *srv;
    pthread_t th;
    unsigned port;
};

static struct fixture fx;

/* ---- handlers ------------------------------------------------------------ */

static void h_get_sandbox(pe_xrpc_request *req, void *ud)
{
    const char *id = json_string_value(json_object_get(req->params, "id"));
    pe_err err = {0};

    if (strcmp(id, "missing") == 0) {
        pe_err_set(&err, PE_ENOENT, 0, "sandbox %s not found", id);
        pe_xrpc_respond_err_named(req, &err, "SandboxNotFound");
        return;
    }
    if (strcmp(id, "boom") == 0) {
        pe_err_set(&err, PE_ESYS, EIO, "open /secret/path");
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_xrpc_respond(req, json_pack("{s:{s:s,s:s}}", "sandbox", "id", id, "auth",
                                   req->authorization ? req->authorization : ""));
}

static void h_create(pe_xrpc_request *req, void *ud)
{
    pe_xrpc_respond(req, json_incref(req->body));
}

static void h_stop(pe_xrpc_request *req, void *ud)
{
    pe_xrpc_respond(req, NULL);
}

/* exec: answered from the worker pool, like the daemon's slow handlers. */
static void exec_work(void *ud)
{
    usleep(20000);
}

static void exec_done(void *ud)
{
    pe_xrpc_request *req = ud;
    pe_xrpc_respond(req, json_pack("{s:s,s:i}", "stdout", "hi\n", "exitCode", 0));
}

static void h_exec(pe_xrpc_request *req, void *ud)
{
    pe_err err = {0};

    if (pe_ev_submit(fx.loop, exec_work, exec_done, req, &err) < 0) {
        pe_xrpc_respond_err(req, &err);
        return;
    }
    pe_http_response_defer(req);
}

/* ---- fixture ------------------------------------------------------------- */

static void *loop_main(void *arg)
{
    pe_ev_run(fx.loop, NULL);
    return NULL;
}

static void metrics_hook(FILE *out, void *ud)
{
    fputs("pocketenv_sandboxes{state=\"RUNNING\"} 0\n", out);
}

/* The owner's token is "Bearer owner"; "Bearer other" is someone else's. */
static int metrics_auth(const char *authorization, void *ud)
{
    if (authorization && strcmp(authorization, "Bearer owner") == 0)
        return 0;
    if (authorization && strcmp(authorization, "Bearer other") == 0)
        return PE_XRPC_EFORBIDDEN;
    return PE_XRPC_EAUTH;
}

static void start_with(const pe_http_config *cfg)
{
    pe_err err = {0};

    fx.loop = pe_ev_loop_new(2, 0, &err);
    ASSERT(fx.loop != NULL);
    fx.srv = pe_http_server_new(fx.loop, cfg, &err);
    if (fx.srv == NULL)
        TEST_FAIL("server: %s", err.msg);
    fx.port = pe_http_server_port(fx.srv);
    ASSERT(fx.port != 0);
    ASSERT_EQ_INT(
        pe_xrpc_register(fx.srv, "io.pocketenv.sandbox.getSandbox", h_get_sandbox, NULL, &err), 0);
    ASSERT_EQ_INT(
        pe_xrpc_register(fx.srv, "io.pocketenv.sandbox.createSandbox", h_create, NULL, &err), 0);
    ASSERT_EQ_INT(pe_xrpc_register(fx.srv, "io.pocketenv.sandbox.stopSandbox", h_stop, NULL, &err),
                  0);
    ASSERT_EQ_INT(pe_xrpc_register(fx.srv, "io.pocketenv.sandbox.exec", h_exec, NULL, &err), 0);
    ASSERT_EQ_INT(pe_xrpc_register(fx.srv, "io.pocketenv.nope.nope", h_stop, NULL, &err), -1);
    pe_http_set_metrics_hook(fx.srv, metrics_hook, NULL);
    pe_http_set_metrics_auth(fx.srv, metrics_auth, NULL);
    ASSERT_EQ_INT(pthread_create(&fx.th, NULL, loop_main, NULL), 0);
}

static void config(pe_http_config *cfg)
{
    pe_http_config_init(cfg);
    cfg->port = 0;
    cfg->timeout_s = 2;
}

static void start(void)
{
    pe_http_config cfg;
    config(&cfg);
    start_with(&cfg);
}

static void stop(void)
{
    pe_ev_stop(fx.loop);
    pthread_join(fx.th, NULL);
    pe_http_server_free(fx.srv);
    pe_ev_loop_free(fx.loop);
}

/* ---- raw client ---------------------------------------------------------- */

static int connect_server(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
    struct timeval tv = {.tv_sec = 10};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ASSERT(fd >= 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        TEST_FAIL("connect: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may close early (413, 431): the answer tells */
        data += n;
        len -= (size_t)n;
    }
}

/* Read until EOF (requests say Connection: close). Returns bytes read. */
static size_t recv_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;

    while (len + 1 < cap) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

static char resp[256 * 1024];

static const char *raw(const char *req, size_t len)
{
    int fd = connect_server();

    send_all(fd, req, len);
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    return resp;
}

static const char *req(const char *method, const char *path, const char *headers, const char *body)
{
    static char buf[200 * 1024];
    int n =
        snprintf(buf, sizeof(buf),
                 "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s"
                 "Content-Length: %zu\r\n\r\n%s",
                 method, path, headers ? headers : "", body ? strlen(body) : 0, body ? body : "");
    ASSERT(n > 0 && (size_t)n < sizeof(buf));
    return raw(buf, (size_t)n);
}

static const char *get(const char *path)
{
    return req("GET", path, NULL, NULL);
}

static const char *post_json(const char *path, const char *body)
{
    return req("POST", path, "Content-Type: application/json\r\n", body);
}

static int status_of(const char *r)
{
    if (strncmp(r, "HTTP/1.1 ", 9) != 0)
        return 0;
    return (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
}

static const char *body_of(const char *r)
{
    const char *b = strstr(r, "\r\n\r\n");
    return b ? b + 4 : "";
}

#define ASSERT_STATUS(r, st) ASSERT_EQ_INT(status_of(r), st)

#define ASSERT_XRPC_ERROR(r, st, name)                                                             \
    do {                                                                                           \
        const char *r_ = (r);                                                                      \
        if (status_of(r_) != (st))                                                                 \
            TEST_FAIL("want %d, got: %s", (st), r_);                                               \
        ASSERT_CONTAINS(body_of(r_), "\"error\":\"" name "\"");                                    \
        ASSERT_CONTAINS(body_of(r_), "\"message\":");                                              \
        ASSERT_CONTAINS(r_, "Content-Type: application/json");                                     \
    } while (0)

/* ---- cases --------------------------------------------------------------- */

TEST_CASE(banner_healthz_and_unknown_route)
{
    start();
    ASSERT_STATUS(get("/"), 200);
    ASSERT_CONTAINS(body_of(resp), "Pocketenv");
    ASSERT_CONTAINS(req("GET", "/", "Accept: text/html\r\n", NULL), "<pre>");
    ASSERT_STATUS(get("/healthz"), 200);
    ASSERT_EQ_STR(body_of(resp), "ok");
    ASSERT(strstr(resp, "Access-Control-Allow-Origin") == NULL); /* no CORS unless configured */
    ASSERT_XRPC_ERROR(get("/nope"), 404, "NotFound");
    stop();
}

TEST_CASE(xrpc_routing)
{
    start();
    ASSERT_STATUS(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=sbx_1"), 200);
    ASSERT_CONTAINS(body_of(resp), "{\"sandbox\":{\"id\":\"sbx_1\"");
    ASSERT_CONTAINS(req("GET", "/xrpc/io.pocketenv.sandbox.getSandbox?id=a%20b",
                        "Authorization: Bearer tok\r\n", NULL),
                    "\"auth\":\"Bearer tok\"");
    ASSERT_CONTAINS(body_of(resp), "\"id\":\"a b\"");
    ASSERT_XRPC_ERROR(get("/xrpc/io.pocketenv.sandbox.nothing"), 404, "XRPCNotSupported");
    ASSERT_XRPC_ERROR(get("/xrpc/not..an.nsid"), 400, "InvalidRequest");
    /* declared in the lexicons, no handler registered */
    ASSERT_XRPC_ERROR(get("/xrpc/io.pocketenv.sandbox.getSandboxes"), 501, "MethodNotImplemented");
    /* wrong HTTP method: upstream answers 400 InvalidRequest */
    ASSERT_XRPC_ERROR(post_json("/xrpc/io.pocketenv.sandbox.getSandbox?id=x", "{}"), 400,
                      "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "Incorrect HTTP method (POST) expected GET");
    ASSERT_XRPC_ERROR(get("/xrpc/io.pocketenv.sandbox.createSandbox"), 400, "InvalidRequest");
    /* procedure without input and without output: 200, empty body */
    ASSERT_STATUS(req("POST", "/xrpc/io.pocketenv.sandbox.stopSandbox?id=x", NULL, NULL), 200);
    ASSERT_EQ_STR(body_of(resp), "");
    stop();
}

TEST_CASE(handler_errors_are_mapped)
{
    start();
    ASSERT_XRPC_ERROR(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=missing"), 404,
                      "SandboxNotFound");
    ASSERT_CONTAINS(body_of(resp), "sandbox missing not found");
    ASSERT_XRPC_ERROR(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=boom"), 500,
                      "InternalServerError");
    ASSERT(strstr(resp, "/secret/path") == NULL); /* 5xx details stay in the log */
    stop();
}

TEST_CASE(validation_errors)
{
    const char *cs = "/xrpc/io.pocketenv.sandbox.createSandbox";

    start();
    ASSERT_XRPC_ERROR(get("/xrpc/io.pocketenv.sandbox.getSandbox"), 400, "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "Params must have the property \\\"id\\\"");
    ASSERT_STATUS(post_json(cs, "{\"base\":\"x\",\"vcpus\":2}"), 200);
    ASSERT_CONTAINS(body_of(resp), "\"vcpus\":2");
    ASSERT_XRPC_ERROR(post_json(cs, "{\"base\":\"x\",\"vcpus\":\"2\"}"), 400, "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "Input/vcpus must be an integer");
    ASSERT_XRPC_ERROR(post_json(cs, "{\"base\":\"x\",\"vcpus\":0}"), 400, "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "can not be less than 1");
    ASSERT_XRPC_ERROR(post_json(cs, "{\"base\":\"x\",\"provider\":\"aws\"}"), 400,
                      "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "must be one of");
    ASSERT_XRPC_ERROR(post_json(cs, "{\"base\":"), 400, "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "Malformed JSON");
    ASSERT_XRPC_ERROR(post_json(cs, "{}"), 400, "InvalidRequest");
    ASSERT_XRPC_ERROR(req("POST", cs, "Content-Type: text/plain\r\n", "{\"base\":\"x\"}"), 400,
                      "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "Wrong request encoding");
    /* Empty bodies as @atproto/xrpc-server reads them: Content-Length: 0
     * is a body to check ({}), none at all is a missing body. */
    ASSERT_XRPC_ERROR(req("POST", cs, NULL, NULL), 400, "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "Request encoding (Content-Type) required but not provided");
    ASSERT_XRPC_ERROR(req("POST", cs, "Content-Type: application/json\r\n", NULL), 400,
                      "InvalidRequest");
    ASSERT_CONTAINS(body_of(resp), "Input must have the property \\\"base\\\"");
    {
        static const char none[] = "POST /xrpc/io.pocketenv.sandbox.createSandbox HTTP/1.1\r\n"
                                   "Host: x\r\nConnection: close\r\n"
                                   "Content-Type: application/json\r\n\r\n";
        ASSERT_XRPC_ERROR(raw(none, sizeof(none) - 1), 400, "InvalidRequest");
        ASSERT_CONTAINS(body_of(resp), "A request body is expected but none was provided");
    }
    stop();
}

TEST_CASE(oversized_body_413)
{
    static char body[150 * 1024];
    const char *cs = "/xrpc/io.pocketenv.sandbox.createSandbox";

    start();
    memset(body, ' ', sizeof(body) - 1);
    body[0] = '{';
    memcpy(body + sizeof(body) - 16, "\"base\":\"x\"}", 11);
    ASSERT_XRPC_ERROR(post_json(cs, body), 413, "PayloadTooLarge");
    /* chunked: no Content-Length, the limit hits while reading */
    {
        static char chunked[160 * 1024];
        size_t n = (size_t)snprintf(chunked, sizeof(chunked),
                                    "POST %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                    "Content-Type: application/json\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n",
                                    cs);
        for (int i = 0; i < 30; i++) {
            n += (size_t)snprintf(chunked + n, sizeof(chunked) - n, "1000\r\n");
            memset(chunked + n, ' ', 4096);
            n += 4096;
            n += (size_t)snprintf(chunked + n, sizeof(chunked) - n, "\r\n");
        }
        n += (size_t)snprintf(chunked + n, sizeof(chunked) - n, "0\r\n\r\n");
        ASSERT_XRPC_ERROR(raw(chunked, n), 413, "PayloadTooLarge");
    }
    ASSERT_STATUS(get("/healthz"), 200);
    stop();
}

#define PREFLIGHT_FROM(origin)                                                                     \
    "Origin: " origin "\r\nAccess-Control-Request-Method: POST\r\n"                                \
    "Access-Control-Request-Headers: authorization, content-type\r\n"

/* A page of another origin (a sandbox's preview, in the owner's browser)
 * must not read the API: no CORS header unless the operator allowed that
 * exact origin, and never "*". */
TEST_CASE(cors_only_for_allowed_origins)
{
    static const char *const origins[] = {"https://app.example.com", NULL};
    const char *cs = "/xrpc/io.pocketenv.sandbox.createSandbox";
    const char *gs = "/xrpc/io.pocketenv.sandbox.getSandbox?id=a";
    pe_http_config cfg;

    start();
    ASSERT_XRPC_ERROR(req("OPTIONS", cs, PREFLIGHT_FROM("http://8080-x.localhost:8789"), NULL), 403,
                      "Forbidden");
    ASSERT(strstr(resp, "Access-Control-Allow") == NULL);
    ASSERT_STATUS(req("GET", gs, "Origin: http://evil.example\r\n", NULL), 200);
    ASSERT(strstr(resp, "Access-Control-Allow-Origin") == NULL);
    ASSERT_STATUS(req("OPTIONS", cs, NULL, NULL), 204); /* no Origin: not CORS */
    ASSERT_CONTAINS(resp, "Allow: GET, HEAD, POST, OPTIONS");
    ASSERT(strstr(resp, "Access-Control-Allow") == NULL);
    stop();

    config(&cfg);
    cfg.cors_origins = origins;
    start_with(&cfg);
    ASSERT_STATUS(req("OPTIONS", cs, PREFLIGHT_FROM("https://app.example.com"), NULL), 204);
    ASSERT_CONTAINS(resp, "Access-Control-Allow-Origin: https://app.example.com\r\n");
    ASSERT_CONTAINS(resp, "Vary: Origin");
    ASSERT_CONTAINS(resp, "Access-Control-Allow-Methods: GET, HEAD, POST, OPTIONS");
    ASSERT_CONTAINS(resp, "Access-Control-Allow-Headers: Authorization, Content-Type");
    ASSERT_STATUS(req("GET", gs, "Origin: https://app.example.com\r\n", NULL), 200);
    ASSERT_CONTAINS(resp, "Access-Control-Allow-Origin: https://app.example.com\r\n");
    ASSERT_CONTAINS(resp, "Vary: Origin");
    /* exact match only: another scheme, port or a longer name is another origin */
    for (const char *const *o =
             (const char *const[]){"http://app.example.com", "https://app.example.com:8443",
                                   "https://app.example.com.evil.example", "http://evil.example",
                                   NULL};
         *o; o++) {
        char h[256];
        snprintf(h, sizeof(h), "Origin: %s\r\n", *o);
        ASSERT_STATUS(req("GET", gs, h, NULL), 200);
        ASSERT(strstr(resp, "Access-Control-Allow-Origin") == NULL);
        ASSERT_CONTAINS(resp, "Vary: Origin");
    }
    ASSERT(strstr(resp, "Access-Control-Allow-Origin: *") == NULL);
    stop();
}

static const char *get_metrics(void)
{
    return req("GET", "/metrics", "Authorization: Bearer owner\r\n", NULL);
}

/* /metrics is the owner's unless the operator made it public. */
TEST_CASE(metrics_need_the_owners_token)
{
    pe_http_config cfg;

    start();
    ASSERT_XRPC_ERROR(get("/metrics"), 401, "AuthenticationRequired");
    ASSERT(strstr(resp, "pocketenv_http") == NULL);
    ASSERT_XRPC_ERROR(req("GET", "/metrics", "Authorization: Bearer nonsense\r\n", NULL), 401,
                      "AuthenticationRequired");
    ASSERT_XRPC_ERROR(req("GET", "/metrics", "Authorization: Bearer other\r\n", NULL), 403,
                      "Forbidden");
    ASSERT_STATUS(get_metrics(), 200);
    ASSERT_CONTAINS(body_of(resp), "pocketenv_http_requests_total");
    ASSERT_STATUS(get("/healthz"), 200); /* health checks stay public */
    stop();

    config(&cfg);
    cfg.metrics_public = true;
    start_with(&cfg);
    ASSERT_STATUS(get("/metrics"), 200);
    ASSERT_CONTAINS(body_of(resp), "pocketenv_http_requests_total");
    stop();
}

TEST_CASE(metrics_count_requests)
{
    start();
    ASSERT_STATUS(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=a"), 200);
    ASSERT_STATUS(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=b"), 200);
    ASSERT_STATUS(get("/xrpc/io.pocketenv.sandbox.getSandbox"), 400);
    ASSERT_STATUS(get_metrics(), 200);
    ASSERT_CONTAINS(resp, "Content-Type: text/plain; version=0.0.4");
    ASSERT_CONTAINS(body_of(resp), "pocketenv_http_requests_total{nsid=\"io.pocketenv.sandbox."
                                   "getSandbox\",status=\"200\"} 2\n");
    ASSERT_CONTAINS(body_of(resp), "pocketenv_http_requests_total{nsid=\"io.pocketenv.sandbox."
                                   "getSandbox\",status=\"400\"} 1\n");
    ASSERT_CONTAINS(body_of(resp), "pocketenv_http_request_duration_seconds_count 3\n");
    ASSERT_CONTAINS(body_of(resp), "pocketenv_http_request_duration_seconds_bucket{le=\"+Inf\"} 3");
    ASSERT_CONTAINS(body_of(resp), "pocketenv_sandboxes{state=\"RUNNING\"} 0");
    stop();
}

TEST_CASE(rate_limit_429)
{
    pe_http_config cfg;

    config(&cfg);
    cfg.rate_burst = 2;
    cfg.rate_per_s = 0.01;
    start_with(&cfg);
    ASSERT_STATUS(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=a"), 200);
    ASSERT_CONTAINS(resp, "X-RateLimit-Limit: 2");
    ASSERT_CONTAINS(resp, "X-RateLimit-Remaining: 1");
    ASSERT_STATUS(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=a"), 200);
    ASSERT_XRPC_ERROR(get("/xrpc/io.pocketenv.sandbox.getSandbox?id=a"), 429, "RateLimitExceeded");
    ASSERT_CONTAINS(resp, "Retry-After: ");
    /* another token has its own bucket; health checks are never limited */
    ASSERT_STATUS(req("GET", "/xrpc/io.pocketenv.sandbox.getSandbox?id=a",
                      "Authorization: Bearer other\r\n", NULL),
                  200);
    ASSERT_STATUS(get("/healthz"), 200);
    stop();
}

TEST_CASE(deferred_response_completes)
{
    start();
    ASSERT_STATUS(post_json("/xrpc/io.pocketenv.sandbox.exec?id=x", "{\"command\":\"echo hi\"}"),
                  200);
    ASSERT_CONTAINS(body_of(resp), "\"stdout\":\"hi\\n\"");
    /* several in flight at once, on one loop */
    {
        int fds[8];
        const char *r = "POST /xrpc/io.pocketenv.sandbox.exec?id=x HTTP/1.1\r\nHost: x\r\n"
                        "Connection: close\r\nContent-Type: application/json\r\n"
                        "Content-Length: 15\r\n\r\n{\"command\":\"x\"}";
        for (int i = 0; i < 8; i++) {
            fds[i] = connect_server();
            send_all(fds[i], r, strlen(r));
        }
        for (int i = 0; i < 8; i++) {
            recv_all(fds[i], resp, sizeof(resp));
            ASSERT_STATUS(resp, 200);
            close(fds[i]);
        }
    }
    stop();
}

TEST_CASE(keep_alive_pipelined)
{
    const char *two = "GET /xrpc/io.pocketenv.sandbox.getSandbox?id=one HTTP/1.1\r\nHost: x\r\n\r\n"
                      "GET /xrpc/io.pocketenv.sandbox.getSandbox?id=two HTTP/1.1\r\nHost: x\r\n"
                      "Connection: close\r\n\r\n";
    const char *second;

    start();
    raw(two, strlen(two));
    ASSERT_STATUS(resp, 200);
    ASSERT_CONTAINS(resp, "\"id\":\"one\"");
    second = strstr(resp + 1, "HTTP/1.1 ");
    ASSERT(second != NULL);
    ASSERT_STATUS(second, 200);
    ASSERT_CONTAINS(second, "\"id\":\"two\"");
    stop();
}

TEST_CASE(two_hundred_concurrent_connections)
{
    enum { N = 200 };
    static int fds[N];
    pe_http_config cfg;
    const char *r = "GET /xrpc/io.pocketenv.sandbox.getSandbox?id=c HTTP/1.1\r\nHost: x\r\n"
                    "Connection: close\r\n\r\n";

    config(&cfg);
    cfg.max_per_ip = 256;
    start_with(&cfg);
    for (int i = 0; i < N; i++)
        fds[i] = connect_server();
    for (int i = 0; i < N; i++)
        send_all(fds[i], r, strlen(r));
    for (int i = 0; i < N; i++) {
        recv_all(fds[i], resp, sizeof(resp));
        if (status_of(resp) != 200)
            TEST_FAIL("connection %d: %s", i, resp);
        close(fds[i]);
    }
    ASSERT_STATUS(get_metrics(), 200);
    ASSERT_CONTAINS(body_of(resp), "getSandbox\",status=\"200\"} 200\n");
    stop();
}

TEST_CASE(connections_per_ip_limited)
{
    pe_http_config cfg;
    int a, b, c;

    config(&cfg);
    cfg.max_per_ip = 2;
    start_with(&cfg);
    a = connect_server();
    b = connect_server();
    c = connect_server(); /* accepted by the kernel, closed by the server */
    send_all(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 34);
    ASSERT_EQ_INT(recv_all(c, resp, sizeof(resp)), 0);
    close(a);
    close(b);
    close(c);
    usleep(100000); /* let the server see the closes */
    ASSERT_STATUS(get("/healthz"), 200);
    stop();
}

TEST_CASE(slowloris_closed_by_timeout)
{
    pe_http_config cfg;
    int fd;
    struct pollfd p;

    config(&cfg);
    cfg.timeout_s = 1;
    start_with(&cfg);
    fd = connect_server();
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", 40);
    p = (struct pollfd){.fd = fd, .events = POLLIN};
    ASSERT_EQ_INT(poll(&p, 1, 10000), 1); /* the bound is for a hang, not a measure */
    ASSERT_EQ_INT(recv_all(fd, resp, sizeof(resp)), 0);
    close(fd);
    ASSERT_STATUS(get("/healthz"), 200);
    stop();
}

TEST_CASE(hostile_input_server_stays_up)
{
    static char big[64 * 1024];
    int n;

    start();
    /* a request line without spaces: MHD closes without an answer */
    {
        int st = status_of(raw("GARBAGE\r\n\r\n", 11));
        if (st != 400 && resp[0] != '\0')
            TEST_FAIL("garbage: %s", resp);
    }
    n = snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 40000);
    n += 40000;
    n += snprintf(big + n, sizeof(big) - (size_t)n, "\r\nConnection: close\r\n\r\n");
    {
        int st = status_of(raw(big, (size_t)n));
        if (st != 431 && st != 400)
            TEST_FAIL("huge header: %s", resp);
    }
    {
        int st = status_of(raw("\x00\x01\x02\xff\r\n\r\n", 8));
        if (st != 400 && resp[0] != '\0')
            TEST_FAIL("binary garbage: %s", resp);
    }
    /* truncated body: the server waits for the rest, then the idle timeout closes it */
    ASSERT_EQ_INT(strlen(raw("POST /xrpc/io.pocketenv.sandbox.createSandbox HTTP/1.1\r\n"
                             "Host: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: 100\r\n\r\n{\"base\"",
                             115)),
                  0);
    ASSERT_STATUS(get("/healthz"), 200);
    stop();
}

/* ---- the buffered-bytes budget ------------------------------------------- */

static int connect_from(const char *src)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)fx.port)};
    struct sockaddr_in me = {.sin_family = AF_INET};
    struct timeval tv = {.tv_sec = 10};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ASSERT(fd >= 0);
    ASSERT(inet_pton(AF_INET, src, &me.sin_addr) == 1);
    ASSERT(bind(fd, (struct sockaddr *)&me, sizeof(me)) == 0);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        TEST_FAIL("connect: %s", strerror(errno));
    return fd;
}

/* A createSandbox body of exactly len bytes: {<spaces>"base":"x"} */
static void json_body(char *buf, size_t len)
{
    memset(buf, ' ', len);
    buf[0] = '{';
    memcpy(buf + len - 11, "\"base\":\"x\"}", 11);
}

/* The head of a createSandbox with a body of len bytes, and its first byte. */
static int open_body(const char *src, size_t len)
{
    char head[512];
    int fd = connect_from(src);
    int n = snprintf(head, sizeof(head),
                     "POST /xrpc/io.pocketenv.sandbox.createSandbox HTTP/1.1\r\nHost: x\r\n"
                     "Connection: close\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n{",
                     len);

    send_all(fd, head, (size_t)n);
    return fd;
}

static void wait_buffered(size_t want)
{
    char line[96];

    snprintf(line, sizeof(line), "pocketenv_http_body_bytes_buffered %zu\n", want);
    for (int i = 0; i < 500; i++) {
        if (strstr(body_of(get_metrics()), line))
            return;
        usleep(10000);
    }
    TEST_FAIL("never saw %s in %s", line, body_of(resp));
}

/* Bodies kept in memory count per client address and in total: one that
 * would go over is refused before it is read (429 for the client's share,
 * 503 for everyone's), with Retry-After; once bodies are done the room
 * comes back. */
TEST_CASE(buffered_bodies_are_budgeted)
{
    static char body[100 * 1024];
    pe_http_config cfg;
    int a, c, fd;

    config(&cfg);
    cfg.max_buffered_per_client = 150 * 1024;
    cfg.max_buffered_total = 250 * 1024;
    start_with(&cfg);
    a = open_body("127.0.0.1", sizeof(body));
    wait_buffered(sizeof(body));
    fd = open_body("127.0.0.1", sizeof(body));
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    ASSERT_XRPC_ERROR(resp, 429, "RateLimitExceeded");
    ASSERT_CONTAINS(resp, "Retry-After: 1");
    c = open_body("127.0.0.2", sizeof(body));
    wait_buffered(2 * sizeof(body));
    fd = open_body("127.0.0.3", sizeof(body));
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    ASSERT_XRPC_ERROR(resp, 503, "NotEnoughResources");
    ASSERT_CONTAINS(resp, "Retry-After: 1");
    /* what fits still fits */
    json_body(body, 20 * 1024);
    fd = open_body("127.0.0.3", 20 * 1024);
    send_all(fd, body + 1, 20 * 1024 - 1);
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    ASSERT_STATUS(resp, 200);
    /* a chunked body takes its share as it comes: over, it is refused */
    {
        static char chunked[120 * 1024];
        size_t n = (size_t)snprintf(chunked, sizeof(chunked),
                                    "POST /xrpc/io.pocketenv.sandbox.createSandbox HTTP/1.1\r\n"
                                    "Host: x\r\nConnection: close\r\n"
                                    "Content-Type: application/json\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n");
        for (int i = 0; i < 15; i++) {
            n += (size_t)snprintf(chunked + n, sizeof(chunked) - n, "1000\r\n");
            memset(chunked + n, ' ', 4096);
            n += 4096;
            n += (size_t)snprintf(chunked + n, sizeof(chunked) - n, "\r\n");
        }
        n += (size_t)snprintf(chunked + n, sizeof(chunked) - n, "0\r\n\r\n");
        fd = connect_from("127.0.0.1");
        send_all(fd, chunked, n);
        recv_all(fd, resp, sizeof(resp));
        close(fd);
        ASSERT_XRPC_ERROR(resp, 429, "RateLimitExceeded");
    }
    /* the bodies in progress are unharmed, and their room comes back */
    json_body(body, sizeof(body));
    send_all(a, body + 1, sizeof(body) - 1);
    send_all(c, body + 1, sizeof(body) - 1);
    recv_all(a, resp, sizeof(resp));
    ASSERT_STATUS(resp, 200);
    recv_all(c, resp, sizeof(resp));
    ASSERT_STATUS(resp, 200);
    close(a);
    close(c);
    wait_buffered(0);
    fd = open_body("127.0.0.1", sizeof(body));
    send_all(fd, body + 1, sizeof(body) - 1);
    recv_all(fd, resp, sizeof(resp));
    close(fd);
    ASSERT_STATUS(resp, 200);
    stop();
}

/* ---- data files ---------------------------------------------------------- */

struct case_file {
    char request[64 * 1024];
    size_t request_len;
    char status[128];
    char body[16][256];
    int n_body;
    int answers; /* how many answers in all (pipelined requests); 0: not checked */
};

/* Expand {{repeat:N:C}} into N copies of C, and {{hex:XX}} into the byte
 * XX (a NUL or a bare CR, which a text file cannot hold in a line). */
static void append_line(struct case_file *cf, const char *line, size_t len)
{
    while (len > 0) {
        const char *open = memmem(line, len, "{{", 2);
        size_t lit = open ? (size_t)(open - line) : len;
        ASSERT(cf->request_len + lit + 2 < sizeof(cf->request));
        memcpy(cf->request + cf->request_len, line, lit);
        cf->request_len += lit;
        line += lit;
        len -= lit;
        if (open && strncmp(open, "{{hex:", 6) == 0) {
            char *end = NULL;
            unsigned long byte = strtoul(open + 6, &end, 16);
            ASSERT(end == open + 8 && end[0] == '}' && end[1] == '}' && byte < 256);
            cf->request[cf->request_len++] = (char)byte;
            len -= 10;
            line += 10;
        } else if (open) {
            ASSERT(strncmp(open, "{{repeat:", 9) == 0);
            char *end = NULL;
            unsigned long count = strtoul(open + 9, &end, 10);
            ASSERT(end && *end == ':' && end[2] == '}' && end[3] == '}');
            ASSERT(cf->request_len + count + 2 < sizeof(cf->request));
            memset(cf->request + cf->request_len, end[1], count);
            cf->request_len += count;
            len -= (size_t)(end + 4 - line);
            line = end + 4;
        }
    }
    memcpy(cf->request + cf->request_len, "\r\n", 2);
    cf->request_len += 2;
}

static void load_case(const char *path, struct case_file *cf)
{
    FILE *f = fopen(path, "re");
    char line[8192];
    int section = 0; /* 1 request, 2 status, 3 body, 4 answers */

    ASSERT(f != NULL);
    memset(cf, 0, sizeof(*cf));
    while (fgets(line, sizeof(line), f)) {
        size_t len = strcspn(line, "\n");
        line[len] = '\0';
        if (section == 0 && line[0] == '#')
            continue;
        if (!strcmp(line, "--- request"))
            section = 1;
        else if (!strcmp(line, "--- status"))
            section = 2;
        else if (!strcmp(line, "--- body"))
            section = 3;
        else if (!strcmp(line, "--- answers"))
            section = 4;
        else if (section == 1)
            append_line(cf, line, len);
        else if (section == 2 && len)
            snprintf(cf->status, sizeof(cf->status), "%.120s", line);
        else if (section == 3 && len && cf->n_body < 16)
            snprintf(cf->body[cf->n_body++], sizeof(cf->body[0]), "%.250s", line);
        else if (section == 4 && len)
            cf->answers = (int)strtol(line, NULL, 10);
    }
    fclose(f);
}

static int check_case(const char *name, const struct case_file *cf)
{
    const char *r = raw(cf->request, cf->request_len);

    if (!strcmp(cf->status, "none")) {
        if (r[0] != '\0') {
            printf("  %s: expected no answer, got %.80s\n", name, r);
            return 1;
        }
        return 0;
    }
    if (strncmp(r, cf->status, strlen(cf->status)) != 0) {
        printf("  %s: expected \"%s\", got \"%.80s\"\n", name, cf->status, r);
        return 1;
    }
    for (int i = 0; i < cf->n_body; i++) {
        if (strstr(body_of(r), cf->body[i]) == NULL) {
            printf("  %s: body lacks \"%s\": %.300s\n", name, cf->body[i], body_of(r));
            return 1;
        }
    }
    if (cf->answers) {
        int n = 0;
        for (const char *p = r; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++)
            n++;
        if (n != cf->answers) {
            printf("  %s: %d answers, want %d: %.600s\n", name, n, cf->answers, r);
            return 1;
        }
    }
    return 0;
}

TEST_CASE(data_files)
{
    static struct case_file cf;
    pe_http_config cfg;
    DIR *d = opendir(PE_HTTP_DATA_DIR);
    struct dirent *de;
    int failed = 0, ran = 0;
    char path[4096];

    ASSERT(d != NULL);
    config(&cfg);
    cfg.timeout_s = 1;
    start_with(&cfg);
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 5, ".http") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", PE_HTTP_DATA_DIR, de->d_name);
        load_case(path, &cf);
        failed += check_case(de->d_name, &cf);
        ran++;
        if (status_of(get("/healthz")) != 200) {
            printf("  %s: server not healthy afterwards\n", de->d_name);
            failed++;
        }
    }
    closedir(d);
    printf("  %d data files, %d failed\n", ran, failed);
    ASSERT(ran > 0);
    ASSERT_EQ_INT(failed, 0);
    stop();
}

/* ---- pe_xrpc_call: handlers called from inside the program ------------- */

struct local {
    const char *nsid;
    json_t *params, *body;
    int rc;
    pe_err err;
    bool returned, done_before_return;
    json_t *out;
    unsigned status;
    char name[64], message[256];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool finished;
};

static void local_done(json_t *out, unsigned status, const char *name, const char *message,
                       void *ud)
{
    struct local *l = ud;

    pthread_mutex_lock(&l->mu);
    l->done_before_return = !l->returned;
    l->out = out;
    l->status = status;
    snprintf(l->name, sizeof(l->name), "%s", name ? name : "");
    snprintf(l->message, sizeof(l->message), "%s", message ? message : "");
    l->finished = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

/* On the loop thread, as the daemon calls it. */
static void local_start(void *ud)
{
    struct local *l = ud;

    pthread_mutex_lock(&l->mu);
    l->rc = pe_xrpc_call(fx.srv, l->nsid, l->params, l->body, "Bearer t", "test", local_done, l,
                         &l->err);
    l->returned = true;
    if (l->rc < 0) {
        l->finished = true;
        pthread_cond_signal(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
}

static void local_call(struct local *l, const char *nsid, json_t *params, json_t *body)
{
    memset(l, 0, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->nsid = nsid;
    l->params = params;
    l->body = body;
    pe_ev_post(fx.loop, local_start, l);
    pthread_mutex_lock(&l->mu);
    while (!l->finished)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
    json_decref(params);
    json_decref(body);
}

TEST_CASE(local_calls_validate_and_answer_later)
{
    struct local l;

    start();
    local_call(&l, "io.pocketenv.sandbox.getSandbox", json_pack("{s:s}", "id", "x"), NULL);
    ASSERT_EQ_INT(l.rc, 0);
    ASSERT(!l.done_before_return); /* never from inside pe_xrpc_call */
    ASSERT_EQ_INT(l.status, 200);
    ASSERT_EQ_STR(json_string_value(json_object_get(json_object_get(l.out, "sandbox"), "auth")),
                  "Bearer t");
    json_decref(l.out);
    /* a handler's named error, and a 5xx whose message is not passed on */
    local_call(&l, "io.pocketenv.sandbox.getSandbox", json_pack("{s:s}", "id", "missing"), NULL);
    ASSERT_EQ_INT(l.status, 404);
    ASSERT_EQ_STR(l.name, "SandboxNotFound");
    ASSERT_CONTAINS(l.message, "missing");
    ASSERT(l.out == NULL);
    local_call(&l, "io.pocketenv.sandbox.getSandbox", json_pack("{s:s}", "id", "boom"), NULL);
    ASSERT_EQ_INT(l.status, 500);
    ASSERT(strstr(l.message, "/secret") == NULL);
    /* deferred by the handler, answered from the pool */
    local_call(&l, "io.pocketenv.sandbox.exec", json_pack("{s:s}", "id", "x"),
               json_pack("{s:s}", "command", "echo hi"));
    ASSERT_EQ_INT(l.status, 200);
    ASSERT_EQ_STR(json_string_value(json_object_get(l.out, "stdout")), "hi\n");
    json_decref(l.out);
    /* refused by the lexicon, as over HTTP: the handler never runs */
    local_call(&l, "io.pocketenv.sandbox.createSandbox", NULL, json_pack("{s:i}", "vcpus", 0));
    ASSERT_EQ_INT(l.rc, -1);
    ASSERT_EQ_INT(l.err.code, PE_EINVAL);
    local_call(&l, "io.pocketenv.sandbox.getSandbox", NULL, NULL);
    ASSERT_EQ_INT(l.rc, -1);
    ASSERT_CONTAINS(l.err.msg, "id");
    local_call(&l, "io.pocketenv.sandbox.getSandbox", json_pack("{s:[]}", "id"), NULL);
    ASSERT_EQ_INT(l.rc, -1);
    local_call(&l, "io.pocketenv.no.suchMethod", NULL, NULL);
    ASSERT_EQ_INT(l.rc, -1);
    ASSERT_EQ_INT(l.err.code, PE_ENOENT);
    stop();
}

int main(void)
{
    int rc = RUN_TESTS(keep_alive_pipelined, banner_healthz_and_unknown_route, xrpc_routing,
                       handler_errors_are_mapped, validation_errors, oversized_body_413,
                       cors_only_for_allowed_origins, metrics_need_the_owners_token,
                       metrics_count_requests, rate_limit_429, deferred_response_completes,
                       two_hundred_concurrent_connections, connections_per_ip_limited,
                       slowloris_closed_by_timeout, hostile_input_server_stays_up, data_files);

    rc |= RUN_TESTS(buffered_bodies_are_budgeted, local_calls_validate_and_answer_later);
    return rc;
}
