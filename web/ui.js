// Small DOM helpers the page's modules share.
const $ = (id) => document.getElementById(id);
export { $ };

// The message line under the header: an error, or with info a progress note.
export function say(text, info = false) {
  $("message").textContent = text || "";
  $("message").className = info ? "info" : "";
}

export function button(label, onclick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener("click", onclick);
  return b;
}

export function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

export function link(text, href, cls) {
  const a = document.createElement("a");
  a.textContent = text;
  a.href = href;
  if (cls) a.className = cls;
  return a;
}

export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

// Run an action with a note while it runs and its error on the message
// line; true when it succeeded.
export async function doing(note, fn) {
  say(note, true);
  try {
    await fn();
    say("");
    return true;
  } catch (e) {
    say(`${note.replace(/…$/, "")} failed: ${e.message}`);
    return false;
  }
}

// Save a Blob as a download named name.
export function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}
