/* The templates: what each layer installs, the environment its sandboxes
 * get and the service they start with (docs/templates.md has the table
 * of the variables each agent reads). Versions are in pins.json. */
#include <stddef.h>
#include <string.h>

#include "core/util.h"
#include "template/template.h"

/* Every template layer: UTF-8 in every process (Debian's C.UTF-8 locale
 * is built into its libc, no locale package needed). */
#define UTF8 "LANG=C.UTF-8"

static const char *const node_env[] = {
    UTF8,
    /* `npm install -g` in a sandbox lands where the agents are, on PATH. */
    "NPM_CONFIG_PREFIX=/usr/local",
    NULL,
};
static const char *const utf8_env[] = {UTF8, NULL};

#define NPM(...)                                                                                   \
    (const char *const[])                                                                          \
    {                                                                                              \
        __VA_ARGS__, NULL                                                                          \
    }

/* openclaw's gateway in the foreground, on every address of the sandbox
 * (the daemon's proxy and exposePort reach it there). Bound beyond
 * loopback it insists on auth: the owner's OPENCLAW_GATEWAY_TOKEN (a
 * secret) if set, else one made at its first start and kept in
 * ~/.openclaw/gateway-token (0600) for the owner to read. */
static const pe_template_service openclaw_gateway = {
    .name = "openclaw-gateway",
    .command = "if [ -z \"${OPENCLAW_GATEWAY_TOKEN:-}\" ]; then "
               "f=\"$HOME/.openclaw/gateway-token\"; mkdir -p \"$HOME/.openclaw\"; "
               "[ -s \"$f\" ] || (umask 077; head -c 24 /dev/urandom | od -An -tx1 | "
               "tr -d ' \\n' > \"$f\"); "
               "OPENCLAW_GATEWAY_TOKEN=$(cat \"$f\"); export OPENCLAW_GATEWAY_TOKEN; fi; "
               "exec openclaw gateway run --port 18789 --bind lan --allow-unconfigured",
    .port = 18789,
    .description = "OpenClaw gateway (control UI and API)",
};

/* A Jupyter server holding kernels: REST /api/kernels and the kernel's
 * channels over a WebSocket. No token of its own: the daemon's preview
 * proxy decides who reaches it (a private port needs the owner's
 * credentials). */
static const pe_template_service jupyter_server = {
    .name = "jupyter-server",
    .command = "exec python3 -m jupyter_server --ServerApp.ip=0.0.0.0 --ServerApp.port=8888 "
               "--ServerApp.token= --ServerApp.password= --ServerApp.allow_root=True "
               "--ServerApp.allow_remote_access=True --ServerApp.disable_check_xsrf=True "
               "--ServerApp.root_dir=/root",
    .port = 8888,
    .description = "Jupyter kernel server (stateful code execution)",
};

/* What every agent template's default policy allows besides its
 * provider: the package registries its agent installs from (npm, PyPI,
 * Debian). */
static const char *const registries[] = {"registry.npmjs.org", "pypi.org", "files.pythonhosted.org",
                                         "deb.debian.org", "security.debian.org"};

static const pe_template templates[] = {
    {.name = "node",
     .parent = "debian",
     .description = "Node.js and npm (the layer the agents stand on)",
     .env = node_env,
     .internal = true},
    {.name = "openclaw",
     .parent = "node",
     .description = "OpenClaw, the personal AI assistant, with its gateway running",
     .command = "openclaw",
     .npm = NPM("openclaw"),
     .env = utf8_env,
     .egress = NPM("api.anthropic.com", "api.openai.com", "openrouter.ai"),
     .service = &openclaw_gateway},
    {.name = "claude-code",
     .parent = "node",
     .description = "Claude Code, Anthropic's agentic coding tool",
     .command = "claude",
     .npm = NPM("@anthropic-ai/claude-code"),
     .env = utf8_env,
     .egress =
         NPM("api.anthropic.com", "console.anthropic.com", "statsig.anthropic.com", "claude.ai")},
    {.name = "codex",
     .parent = "node",
     .description = "Codex CLI, OpenAI's coding agent",
     .command = "codex",
     .npm = NPM("@openai/codex"),
     .env = utf8_env,
     .egress = NPM("api.openai.com", "auth.openai.com", "chatgpt.com")},
    {.name = "gemini",
     .parent = "node",
     .description = "Gemini CLI, Google's open-source AI agent",
     .command = "gemini",
     .npm = NPM("@google/gemini-cli"),
     .env = utf8_env,
     .egress = NPM("generativelanguage.googleapis.com", "cloudcode-pa.googleapis.com",
                   "oauth2.googleapis.com", "accounts.google.com")},
    {.name = "opencode",
     .parent = "node",
     .description = "OpenCode, the open-source AI coding agent for the terminal",
     .command = "opencode",
     .npm = NPM("opencode-ai"),
     .env = utf8_env,
     .egress = NPM("api.anthropic.com", "api.openai.com", "opencode.ai", "models.dev")},
    {.name = "amp",
     .parent = "node",
     .description = "Amp, Sourcegraph's agentic coding tool",
     .command = "amp",
     .npm = NPM("@sourcegraph/amp"),
     .env = utf8_env,
     .egress = NPM("ampcode.com", "*.ampcode.com")},
    {.name = "copilot",
     .parent = "node",
     .description = "GitHub Copilot CLI",
     .command = "copilot",
     .npm = NPM("@github/copilot"),
     .env = utf8_env,
     .egress = NPM("api.github.com", "github.com", "api.githubcopilot.com", "*.githubcopilot.com")},
    {.name = "kilo",
     .parent = "node",
     .description = "Kilo Code CLI, the open-source coding agent",
     .command = "kilo",
     .npm = NPM("@kilocode/cli"),
     .env = utf8_env,
     .egress = NPM("api.kilocode.ai", "kilocode.ai", "openrouter.ai")},
    {.name = "vscode",
     .parent = "node",
     .description = "VS Code in the browser (code-server): exposeVscode opens it",
     .command = "code-server",
     .npm = NPM("code-server"),
     /* Its postinstall compiles VS Code's native addons: the compilers
      * come for the build and go after it, the libraries the addons
      * link stay. */
     .apt = NPM("build-essential", "pkg-config", "python3", "libkrb5-dev", "libx11-dev",
                "libxkbfile-dev", "libsecret-1-dev"),
     .after = "apt-mark manual libkrb5-3 libgssapi-krb5-2 libx11-6 libxkbfile1 libsecret-1-0 "
              ">/dev/null\n"
              "apt-get purge -y --auto-remove build-essential pkg-config python3 libkrb5-dev "
              "libx11-dev libxkbfile-dev libsecret-1-dev\n"
              "apt-get clean\n",
     .env = utf8_env},
    {.name = "python",
     .parent = "debian",
     .description = "Python 3 with a Jupyter kernel server for stateful code execution",
     .command = "python3",
     /* matplotlib: charts come back from the code interpreter as PNG. */
     .apt = NPM("python3", "python3-ipykernel", "python3-jupyter-server", "python3-jupyter-client",
                "python3-matplotlib"),
     .env = utf8_env,
     .service = &jupyter_server},
};

const pe_template *pe_template_find(const char *name)
{
    for (size_t i = 0; name != NULL && i < PE_ARRAY_LEN(templates); i++)
        if (strcmp(templates[i].name, name) == 0)
            return &templates[i];
    return NULL;
}

const pe_template *pe_template_all(size_t *n)
{
    *n = PE_ARRAY_LEN(templates);
    return templates;
}

json_t *pe_template_egress_default(const char *name)
{
    const pe_template *t = name ? pe_template_find(name) : NULL;
    json_t *allow;

    if (t == NULL || t->egress == NULL)
        return NULL;
    allow = json_array();
    for (const char *const *d = t->egress; *d; d++)
        json_array_append_new(allow, json_string(*d));
    for (size_t i = 0; i < sizeof(registries) / sizeof(registries[0]); i++)
        json_array_append_new(allow, json_string(registries[i]));
    return json_pack("{s:s, s:o}", "mode", "allowlist", "allowDomains", allow);
}
