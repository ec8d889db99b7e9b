// markdown.js — a small, safe Markdown renderer for untrusted model output.
//
// Safety rule: every piece of source text is HTML-escaped before anything
// else happens, and the only markup in the result is the fixed set of tags
// this file writes. Attribute values come from escaped text only; link
// targets must be http:, https: or mailto: (so no javascript: or data:
// URLs), and images are shown as links (nothing is loaded from the network).
//
// Supported: paragraphs (single newlines are line breaks), # headings,
// fenced code blocks (``` or ~~~, with a language), inline `code`, **bold**,
// *italic*, _italic_, ~~strike~~, [links](https://…), bare https:// links,
// - / * / + and 1. lists (nested by indentation), > quotes, --- rules and
// pipe tables.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

/** escapeHTML returns s with & < > " ' replaced by entities. */
export function escapeHTML(s) {
  return String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])([ \t]+|$)/;
const TABLE_DELIM = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

/**
 * renderMarkdown returns the HTML of Markdown source src. The result is safe
 * to assign to innerHTML whatever src contains.
 */
export function renderMarkdown(src) {
  // NUL is the placeholder marker of inline(); it has no business in text.
  const text = String(src ?? "").replace(/\r\n?/g, "\n").replace(/\u0000/g, "\uFFFD");
  return blocks(text.split("\n"), 0);
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function blocks(lines, depth) {
  if (depth > 16) return "<p>" + inline(lines.join("\n")) + "</p>"; // quotes in quotes in …
  let out = "";
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (/^\s*$/.test(line)) {
      i++;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const lang = (m[2] || "").replace(/[^\w+#.-]/g, "").slice(0, 32);
      const body = [];
      i++;
      while (i < lines.length) {
        const close = lines[i].trim();
        if (close.startsWith(fence) && close.replace(new RegExp("^\\" + fence[0] + "+"), "") === "") break;
        body.push(lines[i]);
        i++;
      }
      i++; // the closing fence, or the end of a block still streaming
      const cls = lang ? ` class="language-${escapeHTML(lang)}" data-lang="${escapeHTML(lang)}"` : "";
      out += `<pre><code${cls}>${escapeHTML(body.join("\n"))}</code></pre>`;
    } else if ((m = HEADING.exec(line))) {
      const n = m[1].length;
      out += `<h${n}>${inline(m[2] || "")}</h${n}>`;
      i++;
    } else if (RULE.test(line)) {
      out += "<hr>";
      i++;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        body.push(lines[i].replace(QUOTE, ""));
        i++;
      }
      out += `<blockquote>${blocks(body, depth + 1)}</blockquote>`;
    } else if (ITEM.test(line)) {
      const r = list(lines, i, depth);
      out += r.html;
      i = r.next;
    } else if (line.includes("|") && i + 1 < lines.length && TABLE_DELIM.test(lines[i + 1])) {
      const r = table(lines, i);
      out += r.html;
      i = r.next;
    } else {
      const para = [line];
      i++;
      while (i < lines.length && !/^\s*$/.test(lines[i]) && !startsBlock(lines[i])) {
        para.push(lines[i]);
        i++;
      }
      out += `<p>${inline(para.join("\n"))}</p>`;
    }
  }
  return out;
}

// list renders the list that starts at lines[start]: items of the same kind
// (ordered or not) at the same indentation, each with its continuation
// lines, rendered as blocks of their own (so lists nest).
function list(lines, start, depth) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const items = [];
  let i = start;
  let loose = false;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const body = [lines[i].slice(m[0].length)];
    const inner = indent + m[2].length + 1;
    i++;
    while (i < lines.length) {
      const l = lines[i];
      if (/^\s*$/.test(l)) {
        // A blank line continues the item only if indented text follows.
        const nextLine = lines[i + 1];
        if (nextLine !== undefined && leading(nextLine) >= inner && !/^\s*$/.test(nextLine)) {
          body.push("");
          loose = true;
          i++;
          continue;
        }
        break;
      }
      const sub = ITEM.exec(l);
      if (sub && sub[1].length <= indent) break; // the next item, or a shallower list
      if (leading(l) < inner && startsBlock(l) && !sub) break;
      body.push(l.slice(Math.min(leading(l), inner)));
      i++;
    }
    items.push(body);
  }
  const tag = ordered ? "ol" : "ul";
  const n = ordered ? parseInt(first[2], 10) : 1;
  const startAttr = ordered && n !== 1 ? ` start="${n}"` : "";
  let html = `<${tag}${startAttr}>`;
  for (const body of items) {
    let inner = blocks(body, depth + 1);
    if (!loose) inner = inner.replace(/^<p>([\s\S]*?)<\/p>/, "$1"); // tight list: no paragraph
    html += `<li>${inner}</li>`;
  }
  return { html: html + `</${tag}>`, next: i };
}

function leading(line) {
  return line.length - line.trimStart().length;
}

function table(lines, start) {
  const cells = (l) => {
    let s = l.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
    return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
  };
  const head = cells(lines[start]);
  const align = cells(lines[start + 1]).map((c) =>
    c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "",
  );
  const cell = (tag, text, k) => {
    const a = align[k] ? ` class="align-${align[k]}"` : ""; // no style attributes: the CSP forbids them
    return `<${tag}${a}>${inline(text)}</${tag}>`;
  };
  let html = "<div class=\"table\"><table><thead><tr>" + head.map((c, k) => cell("th", c, k)).join("") + "</tr></thead><tbody>";
  let i = start + 2;
  while (i < lines.length && lines[i].includes("|") && !/^\s*$/.test(lines[i])) {
    const row = cells(lines[i]);
    html += "<tr>" + head.map((_, k) => cell("td", row[k] ?? "", k)).join("") + "</tr>";
    i++;
  }
  return { html: html + "</tbody></table></div>", next: i };
}

const SAFE_URL = /^(https?:\/\/|mailto:)[^\s]*$/i;

function link(label, url) {
  // url is already escaped: it cannot close the attribute, and since & is
  // escaped too, no character reference can hide a scheme.
  if (!SAFE_URL.test(url)) return null;
  return `<a href="${url}" target="_blank" rel="noopener noreferrer nofollow">${label}</a>`;
}

// inline renders the spans of one block of text: code spans first (their
// content is only escaped), then links, emphasis and line breaks in the rest.
// Finished HTML is parked behind NUL-delimited placeholders so that later
// patterns never see (or break) markup written by earlier ones.
function inline(text) {
  const parked = [];
  const park = (html) => `\u0000${parked.push(html) - 1}\u0000`;
  let s = text.replace(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/g, (_, ticks, code) => {
    const c = code.length > 1 && code.startsWith(" ") && code.endsWith(" ") ? code.slice(1, -1) : code;
    return park(`<code>${escapeHTML(c)}</code>`);
  });
  s = escapeHTML(s);
  // Links whose label may hold emphasis: [label](url "title")
  s = s.replace(/!?\[([^\]\n]+)\]\(\s*([^\s)]+)(?:\s+&quot;[^\n]*?&quot;)?\s*\)/g, (all, label, url) => {
    const a = link(label, url);
    return a ? park(a) : all;
  });
  s = s.replace(/(^|[\s(])((?:https?:\/\/)[^\s<\u0000]*[^\s<\u0000.,;:!?)'"&])/gi, (all, pre, url) => {
    const a = link(url, url);
    return a ? pre + park(a) : all;
  });
  // Spans are bounded (1,000 characters): an unclosed marker must not
  // make each later one scan to the end (quadratic on a long reply).
  s = s.replace(/\*\*(?=\S)([\s\S]{0,1000}?\S)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^\w])__(?=\S)([\s\S]{0,1000}?\S)__(?!\w)/g, "$1<strong>$2</strong>");
  s = s.replace(/(^|[^*\w\\])\*(?=[^\s*])([^*\n]{0,1000}?[^\s*\\])\*(?!\*)/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^\w\\])_(?=[^\s_])([^_\n]{0,1000}?[^\s_\\])_(?!\w)/g, "$1<em>$2</em>");
  s = s.replace(/~~(?=\S)([\s\S]{0,1000}?\S)~~/g, "<del>$1</del>");
  s = s.replace(/\\([\\`*_{}\[\]()#+\-.!~|])/g, "$1");
  s = s.replace(/\n/g, "<br>");
  // Placeholders may nest (a link label holding code): resolve until none.
  for (let k = 0; k < 4 && s.includes("\u0000"); k++) {
    s = s.replace(/\u0000(\d+)\u0000/g, (_, n) => parked[Number(n)] ?? "");
  }
  return s;
}
