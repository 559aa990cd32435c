// SandTrap console: the live feed of the overview and the players of a session page.
// Attacker text only ever reaches the page through textContent, never as markup.
"use strict";

(function () {
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function startLive(indicator) {
    if (!window.EventSource) return;
    const label = indicator.querySelector(".live-text");
    const feed = document.getElementById("feed");
    const period = encodeURIComponent(indicator.dataset.period || "24h");
    const after = encodeURIComponent(indicator.dataset.after || "");
    const source = new EventSource("/api/live?period=" + period + "&after=" + after);
    source.addEventListener("hello", function () {
      indicator.className = "live on";
      label.textContent = "live";
    });
    source.addEventListener("error", function () {
      indicator.className = "live off";
      label.textContent = "reconnecting";
    });
    source.addEventListener("update", function (message) {
      const data = JSON.parse(message.data);
      indicator.className = "live on";
      label.textContent = "live";
      for (const card of data.cards) {
        const node = document.querySelector('.card[data-card="' + card.key + '"]');
        if (!node) continue;
        const value = node.querySelector(".card-value");
        if (value.textContent !== String(card.value)) {
          value.textContent = String(card.value);
          node.classList.remove("flash");
          void node.offsetWidth;
          node.classList.add("flash");
        }
      }
      const empty = feed.querySelector(".empty");
      if (empty) empty.remove();
      for (const item of data.events) {
        const row = el("li", "new");
        row.appendChild(el("span", "t", item.time.slice(11)));
        const link = el("a", "e", item.eventid);
        if (item.session) link.href = "/sessions/" + encodeURIComponent(item.session);
        row.appendChild(link);
        row.appendChild(el("span", "s", (item.src_ip ? item.src_ip + " " : "") + item.summary));
        feed.insertBefore(row, feed.firstChild);
      }
      while (feed.children.length > 100) feed.removeChild(feed.lastChild);
    });
  }

  function startPlayers() {
    if (!window.AsciinemaPlayer) return;
    for (const node of document.querySelectorAll(".player[data-cast]")) {
      window.AsciinemaPlayer.create(node.dataset.cast, node, {
        cols: Number(node.dataset.cols) || 80,
        rows: Number(node.dataset.rows) || 24,
        idleTimeLimit: 2,
        fit: "width",
        preload: true,
        terminalFontFamily: "DejaVu Sans Mono, Liberation Mono, monospace",
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const indicator = document.getElementById("live");
    if (indicator) startLive(indicator);
    startPlayers();
  });
})();
