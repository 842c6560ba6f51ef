// The markdown of card details, rendered as an EHR would, for the subset the cards use: paragraphs, bullet and
// numbered lists (continuation lines indented or not), **bold**, *italic* and [links](https://…).
// Everything is built as DOM nodes and text nodes, never as HTML, so any markup a card carries shows as text;
// anything outside the subset (headings, code, HTML) is shown as written.

const BULLET = /^ {0,3}[-*+] +(.*)$/;
const NUMBERED = /^ {0,3}\d{1,9}[.)] +(.*)$/;
// Bold first, so that "**" is never read as two italics; an italic holds no "*".
const INLINE = /\*\*(?=\S)([\s\S]*?\S)\*\*|\*([^\s*](?:[^*]*[^\s*])?)\*|\[([^\]\n]+)\]\(([^()\s]+)\)/g;
const WEB_LINK = /^https?:\/\//i;

/** A DocumentFragment of the rendered markdown. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  let paragraph = null; // lines of the open paragraph
  let list = null; // the open <ul> or <ol>
  let item = null; // lines of the open list item

  const closeItem = () => {
    if (item !== null) {
      list.append(inline(document.createElement('li'), item.join('\n')));
      item = null;
    }
  };
  const closeParagraph = () => {
    if (paragraph !== null) {
      fragment.append(inline(document.createElement('p'), paragraph.join('\n')));
      paragraph = null;
    }
  };
  const closeList = () => {
    closeItem();
    if (list !== null) {
      fragment.append(list);
      list = null;
    }
  };

  for (const line of String(text).split(/\r?\n/)) {
    const bullet = BULLET.exec(line);
    const numbered = bullet ? null : NUMBERED.exec(line);
    if (!line.trim()) {
      closeParagraph();
      closeList();
    } else if (bullet || numbered) {
      const tag = bullet ? 'UL' : 'OL';
      closeParagraph();
      closeItem();
      if (list !== null && list.tagName !== tag) closeList();
      list ??= document.createElement(tag.toLowerCase());
      item = [(bullet || numbered)[1]];
    } else if (item !== null) {
      item.push(line.trim()); // a continuation of the item, indented or lazy (CommonMark)
    } else {
      (paragraph ??= []).push(line.trim());
    }
  }
  closeParagraph();
  closeList();
  return fragment;
}

function inline(parent, text) {
  let done = 0;
  for (const match of text.matchAll(INLINE)) {
    const [whole, bold, italic, label, url] = match;
    parent.append(text.slice(done, match.index));
    if (bold !== undefined) {
      parent.append(inline(document.createElement('strong'), bold));
    } else if (label !== undefined && WEB_LINK.test(url)) {
      const link = document.createElement('a');
      link.href = url;
      link.target = '_blank';
      link.rel = 'noopener noreferrer';
      parent.append(inline(link, label));
    } else if (label !== undefined) {
      parent.append(whole); // a link to anything but the web (javascript:, data:) stays text
    } else {
      parent.append(inline(document.createElement('em'), italic));
    }
    done = match.index + whole.length;
  }
  parent.append(text.slice(done));
  return parent;
}
