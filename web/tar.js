// Just enough tar (ustar, with GNU long-name entries for names over 100
// bytes) and gzip for the files pane: the daemon's transfer store takes
// and gives .tar.gz, as `pocketenv cp` sends them. Gzip is the browser's
// own (CompressionStream); file contents stay Blobs, never copied into
// script memory on the way up.
const enc = new TextEncoder();
const dec = new TextDecoder();
const BLOCK = 512;

function octal(buf, off, len, n) {
  const s = n.toString(8).padStart(len - 1, "0");
  for (let i = 0; i < len - 1; i++) buf[off + i] = s.charCodeAt(i);
  buf[off + len - 1] = 0;
}

function header(name, size, type, mode, mtime) {
  const h = new Uint8Array(BLOCK);
  h.set(enc.encode(name).subarray(0, 100), 0);
  octal(h, 100, 8, mode);
  octal(h, 108, 8, 0); // uid: the sandbox's root owns what is unpacked anyway
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, mtime);
  h[156] = type.charCodeAt(0);
  h.set(enc.encode("ustar\x0000"), 257);
  h.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  let sum = 0;
  for (const b of h) sum += b;
  octal(h, 148, 7, sum);
  h[155] = 0x20;
  return h;
}

const pad = (n) => new Uint8Array((BLOCK - (n % BLOCK)) % BLOCK);

// A gzipped tar of files ([{name, blob, mode?, mtime?}]) as a Blob.
export function tarGz(files) {
  const parts = [];
  for (const f of files) {
    const mtime = Math.floor((f.mtime ?? Date.now()) / 1000);
    // Names are UTF-8 bytes as they are, in the header or (over 100
    // bytes) a GNU long-name entry: a reader takes them raw. A pax "path"
    // would be converted from UTF-8 to the reader's locale, which fails
    // for any non-ASCII name when that locale is C.
    const raw = enc.encode(f.name);
    if (raw.length > 100) {
      const long = enc.encode(`${f.name}\0`);
      parts.push(header("././@LongLink", long.length, "L", 0o644, mtime), long, pad(long.length));
    }
    parts.push(header(f.name, f.blob.size, "0", f.mode ?? 0o644, mtime), f.blob, pad(f.blob.size));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  const stream = new Blob(parts).stream().pipeThrough(new CompressionStream("gzip"));
  return new Response(stream).blob();
}

function field(h, off, len) {
  const end = h.subarray(off, off + len).indexOf(0);
  return dec.decode(h.subarray(off, end < 0 ? off + len : off + end));
}

const num = (h, off, len) => parseInt(field(h, off, len).trim() || "0", 8);

// The entries of a .tar.gz Blob: [{name, type ("0" file, "5" folder, ...), data}].
export async function untarGz(blob) {
  const stream = blob.stream().pipeThrough(new DecompressionStream("gzip"));
  const buf = new Uint8Array(await new Response(stream).arrayBuffer());
  const out = [];
  let longName = null;
  for (let off = 0; off + BLOCK <= buf.length; ) {
    const h = buf.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    const size = num(h, 124, 12);
    const type = String.fromCharCode(h[156] || 0x30);
    const data = buf.subarray(off + BLOCK, off + BLOCK + size);
    off += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (type === "x") {
      const m = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(dec.decode(data));
      if (m) longName = m[1];
      continue;
    }
    if (type === "L") {
      longName = dec.decode(data).replace(/\0.*$/s, "");
      continue;
    }
    const prefix = field(h, 345, 155);
    const name = longName ?? (prefix ? `${prefix}/` : "") + field(h, 0, 100);
    longName = null;
    out.push({ name, type, data });
  }
  return out;
}
