/* What the API commands share (client.h). Their help is one table:
 * `pocketenv COMMAND --help` and `pocketenv help COMMAND` print a
 * command's usage, what it does, its options and examples; the table also
 * says which commands take --json. client-main.c asks here before running
 * a command, so no command parses --help or --json itself. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "client.h"
#include "core/util.h"

typedef struct cmd_help {
    const char *names; /* "rm delete remove": the name first, then its aliases */
    const char *usage; /* one or more lines, each after "pocketenv " */
    const char *about;
    const char *options; /* NULL: none (--json is added when it applies) */
    const char *examples;
    /* Where --json applies: NULL nowhere, "" the whole command, else the
     * verbs (argv[1]) that take it, space-separated. */
    const char *json;
    /* argv[words...] are a command of its own, whose options are not
     * ours (exec SANDBOX COMMAND...); 0 if none. */
    int words;
} cmd_help;

#define RES_USAGE(c, put)                                                                          \
    c " put " put "\n" c " list|ls SANDBOX [--json]\n" c " delete|rm|remove ID"

static const cmd_help helps[] = {
    {"login", "login [--token TOKEN | HANDLE]",
     "Log in to the daemon at $POCKETENV_API_URL with an API token and keep it in\n"
     "~/.pocketenv/token.json (mode 0600). The token comes from `pocketenv token create`\n"
     "or from the file `pocketenv serve` writes for the user who runs it. With an AT\n"
     "Protocol HANDLE, sign in on your PDS instead: the URL to open is printed (and\n"
     "opened when a browser can be started), and the daemon's token for your DID is\n"
     "kept once you have signed in. Without either, check the token already saved.",
     "  --token TOKEN   the API token to keep",
     "pocketenv login --token \"$(cat token)\"\npocketenv login alice.bsky.social\n"
     "pocketenv login",
     NULL, 0},
    {"logout", "logout", "Forget the token kept in ~/.pocketenv/token.json.", NULL,
     "pocketenv logout", NULL, 0},
    {"whoami", "whoami [--json]", "Show whom the token logs you in as.", NULL,
     "pocketenv whoami\npocketenv whoami --json | jq -r .did", "", 0},
    {"create new",
     "create|new [NAME] [-b BASE] [-p PROVIDER] [-r REPO] [-k] [-s] [--vcpus N]\n"
     "           [--memory GB] [--disk GB] [--no-wait] [--json]",
     "Create a sandbox and start it, and wait until it runs (what it is doing is\n"
     "shown on a terminal); if it fails, say why and exit 1. Without NAME the\n"
     "daemon picks one.",
     "  -b, --base BASE          base to start from: an image, or an upstream template\n"
     "                           name or at-uri (default debian)\n"
     "  -p, --provider NAME      upstream provider name to record (default: the daemon's,\n"
     "                           cloudflare); the daemon decides what runs it\n"
     "  -r, --repo REPO          git repository to clone in it (URL or github:owner/repo)\n"
     "  -k, --keep-alive         never stop it for being idle\n"
     "  -s, --ssh                open a terminal in it once it runs\n"
     "      --vcpus N            CPUs it may use (the daemon's default and maximum apply)\n"
     "      --memory GB          memory it may use, in GB\n"
     "      --disk GB            disk it may use, in GB\n"
     "      --on-idle ACTION     when idle: stop (default), pause (memory kept, the\n"
     "                           next exec, terminal or preview resumes it) or\n"
     "                           snapshot-then-stop (pocketenv idle changes it)\n"
     "      --idle-after SECONDS idle time before that (the daemon's --idle-timeout)\n"
     "      --no-wait            answer at once (it is then INITIALIZING)",
     "pocketenv create\n"
     "pocketenv create web -b busybox -k\n"
     "pocketenv create big --vcpus 4 --memory 8\n"
     "pocketenv new api -r https://github.com/owner/repo -s\n"
     "id=$(pocketenv create --json | jq -r .id)",
     "", 0},
    {"start", "start SANDBOX [-r REPO] [-k] [-s] [--no-wait]",
     "Start a stopped sandbox and wait until it runs; its files are as it left them.",
     "  -r, --repo REPO          git repository to clone in it first\n"
     "  -k, --keep-alive         never stop it for being idle\n"
     "  -s, --ssh                open a terminal in it once it runs\n"
     "      --no-wait            answer at once",
     "pocketenv start web\npocketenv start web -s", NULL, 0},
    {"stop", "stop SANDBOX", "Stop a sandbox. Its files are kept; `pocketenv start` resumes it.",
     NULL, "pocketenv stop web", NULL, 0},
    {"rm delete remove", "rm|delete|remove [-f] SANDBOX...",
     "Delete sandboxes and all their files; a running one is stopped first. A name\n"
     "that is not found is said, the others are still deleted (exit 1 then).",
     "  -f, --force         accepted, as docker's (running sandboxes are deleted anyway)",
     "pocketenv rm web\npocketenv rm -f web api worker", NULL, 0},
    {"ls", "ls [--json]",
     "List your sandboxes: name, base, provider, the backend that runs it, status\n"
     "(with the reason of a FAILED one) "
     "and when each was created.",
     NULL,
     "pocketenv ls\npocketenv ls --json | jq -r '.[] | select(.status == \"STOPPED\") | .name'", "",
     0},
    {"ps", "ps [-a] [--json]",
     "List your running sandboxes and how long each has been up; with -a, all of\n"
     "them, as ls does (a FAILED one with its reason).",
     "  -a, --all           every sandbox, not only the running ones",
     "pocketenv ps\npocketenv ps -a\npocketenv ps --json | jq length", "", 0},
    {"inspect", "inspect SANDBOX",
     "Print everything the daemon knows of a sandbox, as JSON: id, name, status and\n"
     "its reason, base, provider and the backend that runs it, times, ports.",
     NULL, "pocketenv inspect web\npocketenv inspect web | jq -r .status", "", 0},
    {"exec", "exec [-i] [-t] SANDBOX [--] COMMAND [ARGS...]",
     "Run COMMAND in a running sandbox. One word is a shell command line (run by the\n"
     "sandbox's /bin/sh); several are the program and its arguments, as given.\n"
     "Output comes as it is made, any bytes, however much; standard output and\n"
     "error stay apart. Standard input is passed on when it is not a terminal (or\n"
     "with -i). Ctrl-C and other signals reach the command; pocketenv exits with\n"
     "its exit code.",
     "  -i, --interactive   pass standard input on even from a terminal\n"
     "  -t, --tty           run it on a terminal (keys as typed, the window's size)",
     "pocketenv exec web uname -a\n"
     "pocketenv exec web 'cd /app && make test' || echo failed\n"
     "echo hi | pocketenv exec web wc -c\n"
     "pocketenv exec -it web bash\n"
     "pocketenv exec web -- ls --help     (--help goes to ls)",
     NULL, 2},
    {"logs", "logs [-f] SANDBOX|SERVICE_ID",
     "Print what a sandbox's services wrote (each line after \"NAME | \" when it has\n"
     "several), or one service's (its id: pocketenv service ls). The daemon keeps the\n"
     "newest 64 KiB of each. `pocketenv run -d` makes its command the service main.",
     "  -f, --follow        keep printing what comes, until Ctrl-C or until it has\n"
     "                      ended (the service, every service, or the sandbox)",
     "pocketenv logs web\n"
     "pocketenv logs -f web\n"
     "pocketenv logs svc_01J9Z...",
     NULL, 0},
    {"console shell ssh s", "console|shell|ssh|s [SANDBOX]",
     "Open a terminal in a running sandbox (your first running one without SANDBOX).\n"
     "The window's size follows yours. Ctrl-] detaches: the shell keeps running\n"
     "and the next console reattaches to it. The terminal is restored however the\n"
     "session ends. Exits with the shell's exit code when it exits.",
     NULL, "pocketenv console web\npocketenv s", NULL, 0},
    {"cp copy", "cp|copy [-L] [-q] SOURCE DESTINATION",
     "Copy a file or a directory between this machine and a sandbox, or between two\n"
     "sandboxes, as docker cp does. SANDBOX:/path names a path in a sandbox. A file\n"
     "goes into a DESTINATION directory, or becomes DESTINATION; a directory goes\n"
     "into an existing DESTINATION directory, or becomes DESTINATION; SOURCE/.\n"
     "copies a directory's contents; a DESTINATION ending in / must be a directory.\n"
     "Symlinks stay symlinks; modes and times are kept. SOURCE - reads a tar from\n"
     "standard input into the DESTINATION directory; DESTINATION - writes a tar.\n"
     "A local directory is sent without what its .pocketenvignore, .gitignore and\n"
     ".dockerignore exclude. A progress bar shows on a terminal.",
     "  -L, --follow-link  follow SOURCE if it is a symlink\n"
     "  -q, --quiet        no progress bar",
     "pocketenv cp ./src web:/app/src\n"
     "pocketenv cp web:/app/build ./build\n"
     "pocketenv cp web:/etc/hosts .\n"
     "pocketenv cp web:/data/. api:/data\n"
     "pocketenv cp web:/var/log - | tar t",
     NULL, 0},
    {"env", RES_USAGE("env", "SANDBOX NAME VALUE"),
     "A sandbox's environment variables, set in every command and terminal. put adds\n"
     "NAME or replaces its value.",
     NULL,
     "pocketenv env put web PORT 8080\n"
     "pocketenv env ls web\n"
     "pocketenv env rm 01J9Z...",
     "list ls", 0},
    {"secret", RES_USAGE("secret", "SANDBOX NAME"),
     "A sandbox's secrets: environment variables whose values are sealed with the\n"
     "daemon's public key here, before they leave this machine, and never shown\n"
     "again. The value comes from standard input or a prompt that does not echo,\n"
     "never from the command line.",
     NULL,
     "pocketenv secret put web API_KEY\n"
     "printf %s \"$KEY\" | pocketenv secret put web API_KEY\n"
     "pocketenv secret ls web",
     "list ls", 0},
    {"file", RES_USAGE("file", "SANDBOX PATH [LOCAL_FILE]"),
     "Files written into a sandbox when it starts, sealed like secrets. The content\n"
     "comes from LOCAL_FILE or standard input.",
     NULL,
     "pocketenv file put web /root/.npmrc ~/.npmrc\n"
     "echo 'debug = true' | pocketenv file put web /etc/app.conf\n"
     "pocketenv file ls web",
     "list ls", 0},
    {"volume", RES_USAGE("volume", "SANDBOX NAME PATH"),
     "Named volumes: a directory that outlives the sandbox, mounted at PATH.", NULL,
     "pocketenv volume put web cache /root/.cache\npocketenv volume ls web", "list ls", 0},
    {"expose", "expose SANDBOX PORT [DESCRIPTION]",
     "Make a port the sandbox listens on reachable through the daemon, and print its\n"
     "preview URL.",
     NULL, "pocketenv expose web 3000 'dev server'", NULL, 0},
    {"unexpose", "unexpose SANDBOX PORT", "Stop serving a port exposed with `pocketenv expose`.",
     NULL, "pocketenv unexpose web 3000", NULL, 0},
    {"ports", "ports SANDBOX [--json]", "List a sandbox's exposed ports and their preview URLs.",
     NULL, "pocketenv ports web\npocketenv ports web --json | jq -r '.[].previewUrl'", "", 0},
    {"net",
     "net policy SANDBOX [--json]\n"
     "net policy SANDBOX MODE [--allow X]... [--deny X]... [--port P]...\n"
     "net policy SANDBOX --reset",
     "Show or replace what a sandbox may reach on the network. MODE is none (loopback\n"
     "only), allowlist (only what --allow names) or open (all but what --deny names).\n"
     "X is a name, *.name (its subdomains) or an IPv4 CIDR; --deny wins over --allow.\n"
     "A change holds within a second, also for open connections; --reset removes the\n"
     "policy (the open network again).",
     "  --allow X   a name, *.name or a.b.c.d[/len] the sandbox may reach\n"
     "  --deny X    the same, never reachable (names answer NXDOMAIN)\n"
     "  --port P    allowlist: a destination port allowed (default: all)",
     "pocketenv net policy web allowlist --allow api.anthropic.com --allow '*.npmjs.org' "
     "--port 443\n"
     "pocketenv net policy web\n"
     "pocketenv net policy web --reset",
     "", 0},
    {"vscode code code-server", "vscode|code|code-server SANDBOX",
     "Expose VS Code Server in a sandbox and print its URL.", NULL, "pocketenv vscode web", NULL,
     0},
    {"backup",
     "backup create SANDBOX DIRECTORY [-d DESCRIPTION] [-t TTL]\n"
     "backup list|ls SANDBOX [--json]\n"
     "backup restore BACKUP_ID",
     "Back up a directory of a sandbox, list its backups, or restore one into the\n"
     "sandbox it came from. A backup is removed when its TTL runs out.",
     "  -d, --description TEXT   what the backup is\n"
     "  -t, --ttl TTL            how long to keep it: a number with m, h or d (3d)",
     "pocketenv backup create web /app -d 'before upgrade' -t 12h\n"
     "pocketenv backup ls web\n"
     "pocketenv backup restore 01J9Z...",
     "list ls", 0},
    {"snapshot",
     "snapshot create SANDBOX NAME [-d DESCRIPTION] [-t TTL] [--json]\n"
     "snapshot ls|list [--json]\n"
     "snapshot inspect SNAPSHOT\n"
     "snapshot rm|delete SNAPSHOT...\n"
     "snapshot restore SNAPSHOT [SANDBOX] [--json]",
     "Keep a sandbox's filesystem as a named, read-only snapshot (a running sandbox\n"
     "is frozen for the moment it is taken), list your snapshots, show or remove\n"
     "one. A snapshot outlives its sandbox; it is removed when its TTL runs out, or\n"
     "when you keep more than the daemon's --user-snapshots (the oldest goes).\n"
     "restore puts the sandbox it was taken of back to it in place, where its\n"
     "provider can (Blaxel, Sprites); elsewhere make a new sandbox from it\n"
     "(create -b snapshot:NAME).",
     "  -d, --description TEXT   what the snapshot is\n"
     "  -t, --ttl TTL            how long to keep it: a number with m, h or d (7d)",
     "pocketenv snapshot create web before-upgrade -t 12h\n"
     "pocketenv snapshot ls\n"
     "pocketenv snapshot restore before-upgrade\n"
     "pocketenv snapshot rm before-upgrade",
     "create ls list restore", 0},
    {"node", "node ls|list [--json]\nnode drain|undrain NAME",
     "The daemons (nodes) sharing the daemon's PostgreSQL store: where they are,\n"
     "whether their lease runs (UP) or lapsed (DOWN), their room. A draining node\n"
     "gets no new sandboxes; those it runs stay until stopped. The daemon owner's\n"
     "token only (docs/cluster.md).",
     NULL, "pocketenv node ls\npocketenv node drain host-b\npocketenv node undrain host-b",
     "ls list", 0},
    {"fork", "fork SANDBOX [-n N] [--json]",
     "Snapshot a sandbox (running or stopped) and make N new sandboxes from that\n"
     "snapshot, each on its own copy of its files. Their names are printed at\n"
     "once; they start in the background (pocketenv ls shows when they run). The\n"
     "snapshot stays an hour (pocketenv snapshot ls), for more copies.",
     "  -n, --count N   how many (1 to 100; 1)", "pocketenv fork web -n 10", "", 0},
    {"idle", "idle SANDBOX [stop|pause|snapshot-then-stop [SECONDS]] [--json]",
     "Show or set what happens to a sandbox nobody uses (no exec, terminal or\n"
     "preview traffic) for SECONDS (0: the daemon's --idle-timeout): stop it (the\n"
     "default), pause it (its processes frozen, memory kept; the next exec,\n"
     "terminal or preview request resumes it) or snapshot it as NAME-idle-TIME\n"
     "and stop it.",
     NULL, "pocketenv idle web pause 600\npocketenv idle web", "", 0},
    {"sshkeys",
     "sshkeys put SANDBOX (--private-key FILE --public-key FILE | -g|--generate)\n"
     "sshkeys get SANDBOX [--json]",
     "A sandbox's SSH key pair (for git over SSH), installed in its ~/.ssh. The\n"
     "private key is sealed here; get shows it redacted. --generate makes an\n"
     "Ed25519 pair and prints the public key to add to your git host.",
     "  --private-key FILE       an OpenSSH or PEM private key\n"
     "  --public-key FILE        its public key\n"
     "  -g, --generate           make a new Ed25519 pair",
     "pocketenv sshkeys put web --generate\n"
     "pocketenv sshkeys put web --private-key ~/.ssh/id_ed25519 --public-key "
     "~/.ssh/id_ed25519.pub\n"
     "pocketenv sshkeys get web",
     "get", 0},
    {"tailscale", "tailscale put SANDBOX\ntailscale get SANDBOX [--json]",
     "A sandbox's Tailscale auth key (tskey-auth-...), sealed here. put reads it from\n"
     "standard input or a prompt that does not echo; get shows it redacted.",
     NULL, "pocketenv tailscale put web\npocketenv tailscale get web", "get", 0},
    {"service",
     "service create SANDBOX NAME COMMAND... [-d DESCRIPTION] [-p PORT...]\n"
     "service list|ls SANDBOX [--json]\n"
     "service start|stop|restart|delete|rm|remove|logs SERVICE_ID",
     "Long-running commands of a sandbox, restarted when they exit and started again\n"
     "with the sandbox. logs prints what a service wrote.",
     "  -d, --description TEXT   what the service is\n"
     "  -p, --ports PORT...      ports it listens on (exposed with it)",
     "pocketenv service create web api python3 -m http.server 8000 -p 8000\n"
     "pocketenv service ls web\n"
     "pocketenv service logs 01J9Z...",
     "list ls", 4},
};

static bool has_word(const char *list, const char *word)
{
    size_t len = strlen(word);

    while (*list) {
        size_t w = strcspn(list, " ");
        if (w == len && strncmp(list, word, len) == 0)
            return true;
        list += w + (list[w] == ' ');
    }
    return false;
}

static const cmd_help *find(const char *cmd)
{
    for (size_t i = 0; i < PE_ARRAY_LEN(helps); i++)
        if (has_word(helps[i].names, cmd))
            return &helps[i];
    return NULL;
}

/* Each line of text, indented, after an optional first-line prefix. */
static void lines(FILE *f, const char *text, const char *first, const char *rest)
{
    for (const char *p = first; *text; p = rest) {
        size_t n = strcspn(text, "\n");
        fprintf(f, "%s%.*s\n", p, (int)n, text);
        text += n + (text[n] == '\n');
    }
}

static void print_help(const cmd_help *h)
{
    lines(stdout, h->usage, "usage: pocketenv ", "       pocketenv ");
    printf("\n%s\n", h->about);
    if (h->options || h->json) {
        printf("\nOptions:\n");
        if (h->options)
            printf("%s\n", h->options);
        if (h->json)
            printf("  --json                   print the answer as JSON, for scripts and agents\n");
    }
    printf("\nExamples:\n");
    lines(stdout, h->examples, "  ", "  ");
}

static bool is_help_word(const char *s)
{
    return strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0;
}

/* Where a command's own words begin (exec SANDBOX COMMAND...: after the
 * (words - 1)th argument that is not an option, so `exec -it web ls --help`
 * gives --help to ls); argc when it has none. */
static int own_words(const cmd_help *h, int argc, char **argv)
{
    int pos = 0;

    if (h == NULL || h->words == 0)
        return argc;
    for (int i = 1; i < argc; i++)
        if ((argv[i][0] != '-' || argv[i][1] == '\0') && ++pos == h->words - 1)
            return i + 1;
    return argc;
}

int pe_cli_help(int argc, char **argv)
{
    const cmd_help *h = find(argv[0]);
    bool asked = false;

    if (strcmp(argv[0], "help") == 0) {
        if (pe_cli_bad_args(argc, argv, 1, "COMMAND", 1, 1))
            return pe_cli_usage("help COMMAND  (the commands: pocketenv --help)");
        if ((h = find(argv[1])) == NULL) {
            pe_cli_why("unknown command '%s'", argv[1]);
            return pe_cli_usage("help COMMAND  (the commands: pocketenv --help)");
        }
        print_help(h);
        return 0;
    }
    if (h == NULL)
        return -1;
    for (int i = 1; i < argc && !asked; i++) {
        if (strcmp(argv[i], "--") == 0 || i >= own_words(h, argc, argv))
            break;
        asked = is_help_word(argv[i]);
    }
    if (!asked)
        return -1;
    print_help(h);
    return 0;
}

void pe_cli_why(const char *fmt, ...)
{
    va_list ap;

    fputs("pocketenv: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int pe_cli_usage(const char *usage)
{
    lines(stderr, usage, "usage: pocketenv ", "       pocketenv ");
    return PE_CLI_EXIT_USAGE;
}

/* The n-th word of names (n from 0), into out. */
static void nth_word(const char *names, int n, char *out, size_t size)
{
    while (n-- > 0 && *names) {
        names += strcspn(names, " ");
        names += *names == ' ';
    }
    snprintf(out, size, "%.*s", (int)strcspn(names, " "), names);
}

bool pe_cli_bad_args(int argc, char **argv, int from, const char *names, int required, int max)
{
    int n = argc - from;
    bool count_ok = n >= required && (max < 0 || n <= max);
    char name[64];

    for (int i = from; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] != '\0' && (!count_ok || i == from)) {
            pe_cli_why("unknown option %s", argv[i]);
            return true;
        }
    }
    if (count_ok)
        return false;
    if (n < required) {
        nth_word(names, n, name, sizeof(name));
        pe_cli_why("missing %s", name);
    } else {
        pe_cli_why("unexpected argument '%s'", argv[from + max]);
    }
    return true;
}

bool pe_cli_json;

int pe_cli_take_json(int *argc, char **argv)
{
    const cmd_help *h = find(argv[0]);
    int n = 1, own = own_words(h, *argc, argv);
    bool end = false;

    for (int i = 1; i < *argc; i++) {
        end = end || strcmp(argv[i], "--") == 0 || i >= own;
        if (end || strcmp(argv[i], "--json") != 0) {
            argv[n++] = argv[i];
            continue;
        }
        if (h == NULL || h->json == NULL ||
            (*h->json && !(*argc > 1 && has_word(h->json, argv[1])))) {
            if (h && h->json) { /* some verbs take it: say which */
                char verbs[64];
                snprintf(verbs, sizeof(verbs), "%s", h->json);
                for (char *sp = strchr(verbs, ' '); sp; sp = strchr(sp, ' '))
                    *sp = '|';
                fprintf(stderr, "pocketenv: --json is for '%s %s' (see pocketenv %s --help)\n",
                        argv[0], verbs, argv[0]);
            } else {
                fprintf(stderr, "pocketenv: %s does not take --json (see pocketenv %s --help)\n",
                        argv[0], argv[0]);
            }
            return -1;
        }
        pe_cli_json = true;
    }
    argv[n] = NULL;
    *argc = n;
    return 0;
}

int pe_cli_print_json(json_t *v)
{
    json_dumpf(v ? v : json_null(), stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
    fputc('\n', stdout);
    return 0;
}

void pe_cli_since(const char *iso, bool ago, char *out, size_t size)
{
    struct tm tm;
    long long d;
    const char *unit;

    memset(&tm, 0, sizeof(tm));
    if (iso == NULL || strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm) == NULL) {
        snprintf(out, size, "-");
        return;
    }
    d = (long long)(time(NULL) - timegm(&tm));
    if (d < 0)
        d = 0;
    if (d < 60)
        unit = "second";
    else if (d < 3600)
        d /= 60, unit = "minute";
    else if (d < 86400)
        d /= 3600, unit = "hour";
    else
        d /= 86400, unit = "day";
    snprintf(out, size, "%lld %s%s%s", d, unit, d == 1 ? "" : "s", ago ? " ago" : "");
}

/* The last non-empty line of text, without its line end, into out. */
static void last_line(const char *text, char *out, size_t size)
{
    size_t end = strlen(text), start;

    while (end > 0 && (text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == ' '))
        end--;
    start = end;
    while (start > 0 && text[start - 1] != '\n')
        start--;
    snprintf(out, size, "%.*s", (int)(end - start), text + start);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20)
            *c = ' '; /* no terminal controls from a sandbox */
}

void pe_cli_service_status(json_t *svc, char *out, size_t size)
{
    const char *state = json_string_value(json_object_get(svc, "state"));
    const char *status = pe_cli_str(svc, "status");
    json_t *code = json_object_get(svc, "exitCode");
    long long restarts = json_integer_value(json_object_get(svc, "restarts"));
    const char *words = json_string_value(json_object_get(svc, "lastError"));
    char last[128] = "";
    int n;

    if (state == NULL)
        state = status;
    if (strcmp(state, "CRASHLOOP") != 0 && strcmp(state, "FAILED") != 0) {
        snprintf(out, size, "%s", state);
        return;
    }
    if (words)
        last_line(words, last, sizeof(last));
    n = snprintf(out, size, "%s (", state);
    if (json_is_integer(code) && n >= 0 && (size_t)n < size)
        n += snprintf(out + n, size - (size_t)n, "exited %lld, ",
                      (long long)json_integer_value(code));
    if (n >= 0 && (size_t)n < size)
        n += snprintf(out + n, size - (size_t)n, "restarted %lld time%s%s%s)", restarts,
                      restarts == 1 ? "" : "s", last[0] ? ", last: " : "", last);
}

const char *pe_cli_str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "-";
}

int pe_cli_call(const char *nsid, json_t *params, json_t *body, json_t **out, const char *sandbox)
{
    pe_api a;
    pe_err err;
    int r;

    pe_err_clear(&err);
    *out = NULL;
    if (pe_api_open(&a, true, &err) < 0) {
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return PE_CLI_EXIT_API;
    }
    r = pe_api_call(&a, nsid, params, body, out, &err);
    if (r < 0) {
        if (sandbox && strcmp(a.error_name, "SandboxNotFound") == 0)
            fprintf(stderr, "pocketenv: sandbox %s not found\n", sandbox);
        else
            fprintf(stderr, "pocketenv: %s\n", err.msg[0] ? err.msg : "failed");
        r = PE_CLI_EXIT_API;
    }
    pe_api_close(&a);
    return r;
}

/* Wait (up to 10 minutes: a first image may be being built) until the
 * sandbox is no longer INITIALIZING. On a terminal (stderr), what it is
 * doing is shown on one line as the daemon reports it. 0 once RUNNING;
 * otherwise its status and reason on stderr, and EXIT_API. */
int pe_cli_wait_running(const char *name)
{
    json_t *params = json_pack("{s:s}", "id", name), *out = NULL;
    time_t deadline = time(NULL) + 600;
    const char *status = "", *reason;
    cleanup_free char *shown = NULL;
    bool tty = isatty(2);
    pe_api a;
    pe_err err;

    pe_err_clear(&err);
    if (pe_api_open(&a, true, &err) < 0) {
        json_decref(params);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return PE_CLI_EXIT_API;
    }
    for (;;) {
        json_decref(out);
        out = NULL;
        if (pe_api_call(&a, "io.pocketenv.sandbox.getSandbox", params, NULL, &out, &err) < 0)
            break;
        status = pe_cli_str(json_object_get(out, "sandbox"), "status");
        reason =
            json_string_value(json_object_get(json_object_get(out, "sandbox"), "statusReason"));
        if (strcmp(status, "INITIALIZING") != 0 || time(NULL) > deadline)
            break;
        if (tty && reason && (shown == NULL || strcmp(shown, reason) != 0)) {
            fprintf(stderr, "\r\033[K%s: %s", name, reason);
            free(shown);
            shown = pe_xstrdup(reason);
        }
        usleep(200 * 1000); /* polling, as upstream's clients do (every 2 s) */
    }
    if (shown)
        fprintf(stderr, "\r\033[K");
    json_decref(params);
    pe_api_close(&a);
    if (err.msg[0]) {
        json_decref(out);
        fprintf(stderr, "pocketenv: %s\n", err.msg);
        return PE_CLI_EXIT_API;
    }
    if (strcmp(status, "RUNNING") != 0) {
        reason =
            json_string_value(json_object_get(json_object_get(out, "sandbox"), "statusReason"));
        fprintf(stderr, "pocketenv: sandbox %s is %s%s%s\n", name,
                strcmp(status, "INITIALIZING") == 0 ? "still starting after 10 minutes" : status,
                reason ? ": " : "", reason ? reason : "");
        json_decref(out);
        return PE_CLI_EXIT_API;
    }
    json_decref(out);
    return 0;
}
