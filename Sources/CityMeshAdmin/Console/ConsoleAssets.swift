/// The console's stylesheet and script, compiled into the binary: no CDN, no font service,
/// nothing fetched from outside the node.
enum ConsoleAssets {
    static let css = #"""
        :root { --fg: #1b1f24; --muted: #5b6470; --line: #d5dae0; --bg: #fff; --panel: #f5f7f9; --accent: #0b5cad; --ok: #1a7f37; --warn: #9a6700; --bad: #b3261e; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: var(--fg); background: var(--bg); }
        a { color: var(--accent); }
        a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, textarea:focus-visible, summary:focus-visible { outline: 3px solid #f0b400; outline-offset: 2px; }
        .skip { position: absolute; left: -999px; top: 0; background: #fff; padding: .5em; }
        .skip:focus { left: .5em; z-index: 10; }
        header { background: #12263a; color: #fff; }
        header nav { display: flex; flex-wrap: wrap; align-items: center; gap: .5em 1.5em; padding: .5em 1.25em; }
        header a { color: #dbe9f7; text-decoration: none; padding: .25em .1em; }
        header a[aria-current="page"] { color: #fff; border-bottom: 3px solid #f0b400; }
        header ul { display: flex; flex-wrap: wrap; gap: 1em; list-style: none; margin: 0; padding: 0; }
        .brand { font-size: 1.05em; }
        .who { margin-left: auto; font-size: .9em; }
        .who button { margin-left: .5em; }
        main { padding: 1em 1.25em 3em; max-width: 1400px; }
        h1 { font-size: 1.5em; margin: .3em 0 .6em; }
        h2 { font-size: 1.2em; margin: 1.4em 0 .5em; }
        h3 { font-size: 1.05em; }
        table { border-collapse: collapse; width: 100%; margin: .5em 0 1em; font-size: .93em; }
        caption { text-align: left; color: var(--muted); padding: .3em 0; }
        th, td { border-bottom: 1px solid var(--line); padding: .35em .6em; text-align: left; vertical-align: top; }
        thead th { background: var(--panel); }
        .scroll { overflow-x: auto; }
        .summary { color: var(--muted); }
        .muted { color: var(--muted); }
        .badge { display: inline-block; padding: .1em .55em; border-radius: 1em; font-size: .88em; background: #eef1f4; }
        .badge.ok { background: #dcf5e3; color: var(--ok); }
        .badge.warn { background: #fff3cd; color: var(--warn); }
        .badge.bad { background: #fde2e0; color: var(--bad); }
        .badge.pending { background: #e8eef8; color: var(--accent); }
        p.badge { display: block; border-radius: .4em; padding: .6em .9em; font-size: 1em; }
        .flash { background: #dcf5e3; border-left: 4px solid var(--ok); padding: .6em .9em; }
        .error { background: #fde2e0; border-left: 4px solid var(--bad); padding: .6em .9em; white-space: pre-wrap; }
        .card { border: 1px solid var(--line); border-radius: .5em; padding: .3em 1em 1em; margin: 1em 0; }
        dl.grid { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
        dl.grid dt { color: var(--muted); }
        dl.grid dd { margin: 0; }
        pre { background: var(--panel); padding: .7em; overflow-x: auto; font-size: .86em; }
        pre.sig { white-space: pre-wrap; word-break: break-all; }
        code { font-size: .9em; }
        form.inline { display: inline; }
        form.row, form.filters, form.search { display: flex; flex-wrap: wrap; gap: .5em 1em; align-items: end; margin: .5em 0 1em; }
        form.filters label { display: flex; flex-direction: column; font-size: .88em; color: var(--muted); }
        input, select, textarea, button { font: inherit; }
        input, select, textarea { border: 1px solid #9aa4ae; border-radius: .3em; padding: .3em .45em; background: #fff; color: var(--fg); }
        textarea { width: 100%; font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .9em; }
        button { border: 1px solid #6b7580; background: #f4f6f8; border-radius: .3em; padding: .35em .9em; cursor: pointer; }
        button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
        button.danger { border-color: var(--bad); color: var(--bad); }
        fieldset { border: 1px solid var(--line); border-radius: .4em; }
        fieldset label { margin-right: 1em; }
        .sides { display: flex; flex-wrap: wrap; gap: 1em; }
        .side { flex: 1 1 14em; border: 1px solid var(--line); border-radius: .4em; padding: 0 .8em; }
        .side.kept { border-left: 4px solid var(--ok); }
        .side.lost { border-left: 4px solid var(--warn); }
        .side .value { font-size: 1.15em; font-weight: 600; }
        ol.listing { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .86em; background: var(--panel); padding: .6em 0 .6em 3.5em; }
        ol.listing li.bad { background: #fde2e0; }
        .issue { color: var(--bad); font-family: system-ui, sans-serif; }
        pre.diff .add { background: #dcf5e3; display: block; }
        pre.diff .del { background: #fde2e0; display: block; }
        pre.diff .same { color: var(--muted); display: block; }
        tr.muted td, tr.muted th { color: var(--muted); }
        svg.federation { width: 100%; max-width: 760px; height: auto; }
        svg.federation line { stroke: #9aa4ae; stroke-width: 2; stroke-dasharray: 6 5; }
        svg.federation .edge.up line { stroke: var(--ok); stroke-width: 3; stroke-dasharray: none; }
        svg.federation circle { fill: #eef1f4; stroke: #6b7580; stroke-width: 2; }
        svg.federation .city.up circle { fill: #dcf5e3; stroke: var(--ok); }
        svg.federation .city.self circle { fill: #12263a; stroke: #12263a; }
        svg.federation .city.self text { fill: #fff; font-weight: 600; }
        svg.federation text { font-size: 13px; fill: var(--fg); }
        svg.federation text.share { font-size: 12px; fill: #0b3d6e; paint-order: stroke; stroke: #fff; stroke-width: 4px; }
        svg.chart { width: 100%; max-width: 720px; height: auto; }
        svg.chart rect.sent { fill: #0b5cad; }
        svg.chart rect.received { fill: #8fbde8; }
        svg.chart .axis { stroke: #6b7580; }
        svg.chart .tick { font-size: 11px; fill: var(--muted); }
        figure { margin: 1em 0; }
        figcaption { color: var(--muted); font-size: .9em; }
        .ranges a { margin-right: 1em; }
        .ranges a[aria-current] { font-weight: 700; }
        body.login main { max-width: 34em; margin: 4em auto; }
        body.login input[type=password] { width: 100%; margin: .4em 0; }
        .help { color: var(--muted); font-size: .9em; }
        .role-admin { color: #ffd479; }
        .role-auditor { color: #b6e3ff; }
        @media (prefers-color-scheme: dark) {
          :root { --fg: #e6e9ed; --muted: #a5afba; --line: #3a424b; --bg: #15191e; --panel: #1e242b; --accent: #6cb4ff; }
          input, select, textarea, button { background: #1e242b; color: var(--fg); }
          .skip { background: #15191e; }
          svg.federation circle { fill: #2a323b; }
          svg.federation text.share { fill: #b6d7ff; stroke: #15191e; }
          .badge.ok, .flash { background: #17351f; } .badge.bad, .error, ol.listing li.bad { background: #3d1a18; } .badge.warn { background: #3a2f10; }
          pre.diff .add { background: #17351f; } pre.diff .del { background: #3d1a18; }
        }
        """#

    /// In-browser checks (Web Crypto) and two conveniences. Everything else works without it.
    static let js = #"""
        "use strict";
        (function () {
          const enc = new TextEncoder();
          const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
          const hex = (a) => Array.from(a, (x) => x.toString(16).padStart(2, "0")).join("");
          const concat = (...parts) => {
            const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
            let o = 0;
            for (const p of parts) { out.set(p, o); o += p.length; }
            return out;
          };
          const sha256 = async (...parts) => new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));

          // RFC 9162 section 2.1.3.2: the root an inclusion proof leads to.
          async function rootFromInclusion(index, size, leaf, proof) {
            let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
            for (const p of proof) {
              if (sn === 0n) throw new Error("the proof has more hashes than the tree has levels");
              if ((fn & 1n) === 1n || fn === sn) {
                r = await sha256(Uint8Array.of(1), p, r);
                if ((fn & 1n) === 0n) { while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; } }
              } else {
                r = await sha256(Uint8Array.of(1), r, p);
              }
              fn >>= 1n; sn >>= 1n;
            }
            if (sn !== 0n) throw new Error("the proof has fewer hashes than the tree needs");
            return r;
          }

          // A signed-note verifier key: name+keyhash+base64(0x01 || Ed25519 public key) or
          // name+keyhash+base64(0x02 || DER SPKI of an ECDSA P-256 key).
          async function parseVKey(text) {
            // The name and the hash hold no "+"; the base64 key may.
            const t = text.trim(), i = t.indexOf("+"), j = i < 0 ? -1 : t.indexOf("+", i + 1);
            if (i <= 0 || j < 0) throw new Error("the verifier key is not name+hash+key");
            const name = t.slice(0, i), id = t.slice(i + 1, j), key64 = t.slice(j + 1);
            const raw = b64(key64);
            let expected;
            if (raw.length === 33 && raw[0] === 1) expected = hex((await sha256(enc.encode(name + "\n"), raw)).slice(0, 4));
            else if (raw.length > 1 && raw[0] === 2) expected = hex((await sha256(raw.slice(1))).slice(0, 4));
            else throw new Error("the verifier key is not an Ed25519 (0x01) or ECDSA (0x02) note key");
            if (expected !== id) throw new Error("the verifier key's hash does not match its name and key");
            return { name, id, type: raw[0], key: raw.slice(1), text: text.trim() };
          }

          // An ASN.1 DER ECDSA signature (SEQUENCE of two INTEGERs) as Web Crypto's r || s, 32 bytes each.
          function derToRaw(der) {
            let p = 0;
            const need = (c) => { if (!c) throw new Error("the checkpoint's ECDSA signature is not DER"); };
            need(der[p++] === 0x30 && der[p++] === der.length - 2);
            const out = new Uint8Array(64);
            for (let k = 0; k < 2; k++) {
              need(der[p++] === 0x02);
              let n = der[p++];
              need(n > 0 && p + n <= der.length);
              while (n > 32 && der[p] === 0) { p++; n--; }
              need(n <= 32);
              out.set(der.slice(p, p + n), k * 32 + 32 - n);
              p += n;
            }
            need(p === der.length);
            return out;
          }

          // A C2SP signed note: body, blank line, signature lines "— name base64(keyid || sig)".
          function parseNote(text) {
            const cut = text.indexOf("\n\n");
            if (cut < 0) throw new Error("the checkpoint has no signatures");
            const body = text.slice(0, cut + 1);
            const sigs = text.slice(cut + 2).split("\n").filter((l) => l.length > 0).map((l) => {
              const m = /^\u2014 (\S+) (\S+)$/.exec(l);
              if (!m) throw new Error("a signature line is malformed");
              const raw = b64(m[2]);
              return { name: m[1], id: hex(raw.slice(0, 4)), sig: raw.slice(4) };
            });
            const lines = body.split("\n");
            if (lines.length < 4 || !/^[0-9]+$/.test(lines[1])) throw new Error("the checkpoint body is not origin, size, root");
            return { body, origin: lines[0], size: BigInt(lines[1]), root: lines[2], sigs };
          }

          async function verifyProof(d) {
            if (!window.isSecureContext || !crypto.subtle) {
              throw new Error("this page is not a secure context (open the console over https or on localhost), so the browser offers no Web Crypto");
            }
            const key = await parseVKey(d.vkey);
            const pinned = localStorage.getItem("citymesh.pinned." + key.name);
            if (pinned && pinned.trim() !== key.text) throw new Error("the node's key is not the key you pinned for " + key.name);
            const entry = b64(d.entryBytes);
            const parsed = JSON.parse(new TextDecoder().decode(entry));
            if (BigInt(parsed.index) !== BigInt(d.index)) throw new Error("the entry's bytes name index " + parsed.index + ", not " + d.index);
            const leaf = await sha256(Uint8Array.of(0), entry);
            const root = await rootFromInclusion(d.index, d.treeSize, leaf, d.proof.map(b64));
            const note = parseNote(d.checkpoint);
            if (note.size !== BigInt(d.treeSize)) throw new Error("the checkpoint is for " + note.size + " entries, the proof for " + d.treeSize);
            if (hex(b64(note.root)) !== hex(root)) throw new Error("the proof leads to a root the checkpoint does not sign");
            const sig = note.sigs.find((s) => s.name === key.name && s.id === key.id);
            if (!sig) throw new Error("the checkpoint carries no signature by " + key.name);
            let k;
            if (key.type === 2) {
              k = await crypto.subtle.importKey("spki", key.key, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
              if (!(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, k, derToRaw(sig.sig), enc.encode(note.body)))) {
                throw new Error("the checkpoint's ECDSA P-256 signature does not verify with " + key.name + "+" + key.id);
              }
            } else {
              try {
                k = await crypto.subtle.importKey("raw", key.key, { name: "Ed25519" }, false, ["verify"]);
              } catch (e) {
                const partial = new Error("this browser's Web Crypto has no Ed25519 (Chromium 137+, Firefox 129+ and Safari 17+ have it): the entry's path to the checkpoint's root checked out, but the checkpoint's signature could not be checked here");
                partial.partial = true;
                throw partial;
              }
              if (!(await crypto.subtle.verify({ name: "Ed25519" }, k, sig.sig, enc.encode(note.body)))) {
                throw new Error("the checkpoint's Ed25519 signature does not verify with " + key.name + "+" + key.id);
              }
            }
            const witnesses = note.sigs.filter((s) => s.name !== key.name).length;
            return "Verified in this browser: entry " + d.index + " is in the log of " + d.treeSize + " entries whose checkpoint is signed by " +
              key.name + "+" + key.id + (pinned ? " (the key you pinned)" : "") + (witnesses ? "; " + witnesses + " witness cosignature(s) attached, not checked here" : "") + ".";
          }

          function proofPage() {
            const data = document.getElementById("proof-data");
            const badge = document.getElementById("proof-badge");
            if (!data || !badge) return;
            const d = JSON.parse(data.textContent);
            const run = () => verifyProof(d).then((msg) => {
              badge.className = "badge ok"; badge.textContent = "\u2713 " + msg; badge.dataset.result = "verified";
            }, (err) => {
              if (err.partial) {
                badge.className = "badge warn"; badge.textContent = "\u26a0 Partly verified: " + err.message; badge.dataset.result = "partial";
              } else {
                badge.className = "badge bad"; badge.textContent = "\u2717 Not verified: " + err.message; badge.dataset.result = "failed";
              }
            });
            run();
            const form = document.getElementById("pin-form");
            const input = document.getElementById("pinned");
            parseVKey(d.vkey).then((key) => {
              input.value = localStorage.getItem("citymesh.pinned." + key.name) || "";
              form.addEventListener("submit", (ev) => {
                ev.preventDefault();
                localStorage.setItem("citymesh.pinned." + key.name, input.value.trim());
                run();
              });
              document.getElementById("unpin").addEventListener("click", () => {
                localStorage.removeItem("citymesh.pinned." + key.name); input.value = ""; run();
              });
            }, () => {});
          }

          // Reconcile: a chosen file's text goes into the form's field.
          function fileInputs() {
            for (const input of document.querySelectorAll("input[type=file][data-target]")) {
              input.addEventListener("change", () => {
                const file = input.files && input.files[0];
                const target = document.getElementById(input.dataset.target);
                if (!file || !target) return;
                file.text().then((t) => { target.value = t; });
              });
            }
          }

          // For the browser test: the same check on altered data must fail.
          window.CityMeshConsole = { verifyProof, parseVKey };
          document.addEventListener("DOMContentLoaded", () => { proofPage(); fileInputs(); });
        })();
        """#
}
