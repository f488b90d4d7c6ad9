// Break opportunities (<wbr>) after the dots of long dotted
// names (sklearn_cnn.preprocessing.BaseImageTransformer) in the page title,
// the navigation and the contents, so that they wrap between their parts
// rather than mid-word. Copied text is unchanged: <wbr> adds no character.
document.addEventListener("DOMContentLoaded", () => {
  const selectors = [
    ".bd-article h1",
    ".bd-sidebar-primary nav a",
    ".bd-sidebar-secondary .toc-entry a",
    ".bd-breadcrumbs a",
    ".bd-breadcrumbs li",
  ];
  const longName = /[A-Za-z0-9]+[._][A-Za-z0-9_.]+/;
  for (const element of document.querySelectorAll(selectors.join(","))) {
    const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT);
    const texts = [];
    while (walker.nextNode()) {
      if (longName.test(walker.currentNode.nodeValue)) {
        texts.push(walker.currentNode);
      }
    }
    for (const text of texts) {
      const parts = text.nodeValue.split(/(?<=\.)/);
      if (parts.length < 2) continue;
      const fragment = document.createDocumentFragment();
      parts.forEach((part, index) => {
        if (index > 0) fragment.appendChild(document.createElement("wbr"));
        fragment.appendChild(document.createTextNode(part));
      });
      text.replaceWith(fragment);
    }
  }
});
