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

// Every pattern here runs on untrusted text, some of it on every render of
// a streaming reply: none may backtrack more than linearly on a line (a
// fence of 8,000 tildes, a heading of 100,000 spaces, 50,000 "[a](" froze
// the page for seconds), so the ambiguous parts are done by hand.
const FENCE_RUN = /^ {0,3}(`{3,}|~{3,})/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/;
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

// fenceOf returns the fence a line opens ({fence, lang}), or null. A
// backtick fence's info string holds no backtick; the language is its
// first word.
function fenceOf(line) {
  const m = FENCE_RUN.exec(line);
  if (!m) return null;
  const rest = line.slice(m[0].length);
  if (m[1][0] === "`" && rest.includes("`")) return null;
  return { fence: m[1], lang: rest.trim().split(/[ \t]/, 1)[0] };
}

// headingText returns a heading's text without its closing run of #s and
// the blanks around it.
function headingText(s) {
  s = (s || "").trimEnd();
  let j = s.length;
  while (j > 0 && s[j - 1] === "#") j--;
  if (j < s.length && (j === 0 || s[j - 1] === " " || s[j - 1] === "\t")) s = s.slice(0, j).trimEnd();
  return s;
}

function startsBlock(line) {
  return fenceOf(line) !== null || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
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
    } else if ((m = fenceOf(line))) {
      const fence = m.fence;
      const lang = m.lang.replace(/[^\w+#.-]/g, "").slice(0, 32);
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
      out += `<h${n}>${inline(headingText(m[2]))}</h${n}>`;
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
    } else if (line.includes("|") && i + 1 < lines.length && isTable(line, lines[i + 1])) {
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

// MAX_COLUMNS bounds a table: a browser lays out a table of thousands of
// columns for seconds (50,000 pipes froze the page for 20 s), and no
// reply needs that many; such a line stays text.
const MAX_COLUMNS = 64;

// cells splits a table row into its cells.
function cells(l) {
  let s = l.trim();
  if (s.startsWith("|")) s = s.slice(1);
  if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

// isTable reports whether line and the next start a table: a delimiter
// row with as many cells as the header (as GFM requires), at most
// MAX_COLUMNS.
function isTable(line, next) {
  if (!TABLE_DELIM.test(next)) return false;
  const n = cells(next).length;
  return n <= MAX_COLUMNS && cells(line).length === n;
}

function table(lines, start) {
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

// URL_PAREN_DEPTH is how deep parentheses may nest in a URL and still be
// part of it, in a link and bare: two, as in a_(b_(c)).
const URL_PAREN_DEPTH = 2;

// parens returns a pattern for a pair of parentheses around characters of
// class c (a class holding neither parenthesis) and pairs of its own,
// nested at most depth deep. Its alternatives start with different
// characters, so text matches it one way only, and a URL's scan stops at
// the first parenthesis that is one too deep or closes nothing: a start
// that fails has at most depth others' unclosed parentheses behind it, so
// at most depth + 1 failed scans cover any character (linear).
function parens(c, depth) {
  let p = `\\([${c}]*\\)`;
  for (let d = 1; d < depth; d++) p = `\\((?:[${c}]|${p})*\\)`;
  return p;
}

// Links whose label may hold emphasis: [label](url "title"). The label
// holds no bracket and the title is bounded, and the URL's parentheses
// must pair: no start rescans the rest of a line that never closes.
const LINK = new RegExp(
  String.raw`!?\[([^[\]\n]{1,1000})\]\([ \t]*((?:[^\s()]|${parens(String.raw`^\s()`, URL_PAREN_DEPTH)})+)(?:[ \t]+&quot;[^\n]{0,1000}?&quot;)?[ \t]*\)`,
  "g",
);

// Bare links: the URL's paired parentheses are part of it, a closing one
// without its pair is not, nor is the punctuation that ends a sentence.
// The text is escaped already: a URL holds & only as &amp; (and never
// ends in it), so that a quote or angle bracket after it (&quot; &lt;
// &gt; &#39;) ends it whole, not cut before its ";"; a URL may follow one.
const BARE_PAREN = parens(String.raw`^\s<\u0000()`, URL_PAREN_DEPTH);
const BARE_LINK = new RegExp(
  String.raw`(^|[\s(]|&quot;|&lt;|&#39;)(https?:\/\/(?:&amp;|[^\s<\u0000()&]|${BARE_PAREN})*(?:[^\s<\u0000().,;:!?'"&]|${BARE_PAREN}))`,
  "gi",
);

function link(label, url) {
  // url is already escaped: it cannot close the attribute, and since & is
  // escaped too, no character reference can hide a scheme.
  if (!SAFE_URL.test(url)) return null;
  return `<a href="${url}" target="_blank" rel="noopener noreferrer nofollow">${label}</a>`;
}

// codeSpans returns text with each code span (a run of n backticks, then
// text, then the next run of exactly n) replaced by span(its text), with
// one space stripped from each end of text that has one at both. A run
// with no closing run is plain text. Linear: the runs are found once, and
// the search for each length's next run only moves forward.
function codeSpans(text, span) {
  const runs = [];
  for (let i = text.indexOf("`"); i >= 0; i = text.indexOf("`", i)) {
    let j = i;
    while (j < text.length && text[j] === "`") j++;
    runs.push({ at: i, n: j - i });
    i = j;
  }
  if (runs.length < 2) return text;
  const byLen = new Map(); // n → indexes into runs, ascending
  runs.forEach((r, k) => {
    const l = byLen.get(r.n);
    if (l) l.push(k);
    else byLen.set(r.n, [k]);
  });
  const next = new Map(); // n → position in byLen.get(n) to search from
  let out = "";
  let from = 0; // text before this is in out
  for (let k = 0; k < runs.length; k++) {
    const r = runs[k];
    const l = byLen.get(r.n);
    let p = next.get(r.n) ?? 0;
    while (p < l.length && l[p] <= k) p++;
    next.set(r.n, p);
    if (p === l.length) continue; // no closing run: plain backticks
    const close = runs[l[p]];
    let code = text.slice(r.at + r.n, close.at);
    if (code.length > 1 && code.startsWith(" ") && code.endsWith(" ") && code.trim() !== "") code = code.slice(1, -1);
    out += text.slice(from, r.at) + span(code);
    from = close.at + close.n;
    k = l[p];
  }
  return out + text.slice(from);
}

// inline renders the spans of one block of text: code spans first (their
// content is only escaped), then links, emphasis and line breaks in the rest.
// Finished HTML is parked behind NUL-delimited placeholders so that later
// patterns never see (or break) markup written by earlier ones.
function inline(text) {
  const parked = [];
  const park = (html) => `\u0000${parked.push(html) - 1}\u0000`;
  let s = codeSpans(text, (code) => park(`<code>${escapeHTML(code)}</code>`));
  s = escapeHTML(s);
  s = s.replace(LINK, (all, label, url) => {
    const a = link(label, url);
    return a ? park(a) : all;
  });
  s = s.replace(BARE_LINK, (all, pre, url) => {
    const a = link(url, url);
    return a ? pre + park(a) : all;
  });
  // A run of four or more * or _, or three or more ~, opens and closes
  // nothing here (nested emphasis that deep is not written): it is text,
  // parked before the pairs below could eat it (a ****** b showed "a  b").
  s = s.replace(/\*{4,}|_{4,}|~{3,}/g, (run) => park(run));
  // Spans are bounded (1,000 characters): an unclosed marker must not
  // make each later one scan to the end (quadratic on a long reply).
  s = s.replace(/\*\*\*(?=[^\s*])([\s\S]{0,1000}?[^\s*])\*\*\*/g, "<strong><em>$1</em></strong>");
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
