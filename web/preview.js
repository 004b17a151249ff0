// Sign a browser in to a private preview (docs/design/ports.md).
//
// A preview the browser has no cookie for redirects here, to the daemon's
// own origin, with ?to=<the preview URL>. This page holds the API token
// (the web page's local storage, or pasted here), asks the daemon for a
// one-time sign-in link of that preview and goes there; the preview swaps
// the link's code for its own cookie and redirects to the page, so neither
// the token nor the code is ever in the preview's address bar, history or
// Referer, and the preview's own scripts never see the API token.
const TOKEN_KEY = "pocketenv.token";
const $ = (id) => document.getElementById(id);
const to = new URLSearchParams(location.search).get("to") || "";

function say(text) {
  $("message").textContent = text || "";
}

async function link(token) {
  const r = await fetch("/xrpc/io.pocketenv.port.createPreviewLink", {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ url: to }),
  });
  let data = null;
  try {
    data = await r.json();
  } catch {
    data = {};
  }
  return { status: r.status, data };
}

function askForToken(why) {
  $("opening").hidden = true;
  $("signin").hidden = false;
  say(why);
  $("token").focus();
}

async function open(token, fromForm) {
  say("");
  let r;
  try {
    r = await link(token);
  } catch (e) {
    say(`The daemon cannot be reached: ${e.message}`);
    return;
  }
  if (r.status === 200 && r.data.url) {
    if (fromForm) localStorage.setItem(TOKEN_KEY, token);
    location.replace(r.data.url);
    return;
  }
  if (r.status === 401) {
    if (!fromForm) localStorage.removeItem(TOKEN_KEY);
    askForToken("The daemon refused the token: sign in again.");
  } else if (r.status === 404) {
    askForToken(
      "No such preview among this token's sandboxes: it belongs to another user, " +
        "or its port is no longer exposed. Sign in as its owner to open it.",
    );
  } else {
    say((r.data && r.data.message) || `The daemon answered ${r.status}.`);
  }
}

$("target").textContent = to;
$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  open($("token").value.trim(), true);
});
if (!to) {
  $("opening").hidden = true;
  say("Nothing to open: this page is where private previews send a browser to sign in.");
} else if (localStorage.getItem(TOKEN_KEY)) {
  open(localStorage.getItem(TOKEN_KEY), false);
} else {
  askForToken("");
}
