// taskcore dashboard: swap in the panels the server pushes, send button actions.
(() => {
  "use strict";
  const flash = (text, ok) => {
    const el = document.getElementById("flash");
    if (!el) return;
    el.textContent = text;
    el.className = ok ? "ok" : "bad";
  };
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button[data-post]");
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.post, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-Requested-With": "taskcore" },
        body: button.dataset.body || "{}",
      });
      const reply = await response.json().catch(() => ({ error: response.statusText }));
      flash(response.ok ? "Done: " + button.textContent : "Refused: " + reply.error, response.ok);
      if (response.ok && button.dataset.reload !== undefined) window.location.reload();
    } catch (err) {
      flash("Request failed: " + err, false);
    } finally {
      button.disabled = false;
    }
  });
  if (document.getElementById("panel-queues") && window.EventSource) {
    const status = document.getElementById("live");
    const events = new EventSource("/api/events");
    events.addEventListener("panels", (ev) => {
      const panels = JSON.parse(ev.data);
      for (const [id, html] of Object.entries(panels)) {
        const el = document.getElementById("panel-" + id);
        if (el) el.innerHTML = html; // rendered and escaped by the server
      }
      if (status) status.textContent = "live";
    });
    events.onerror = () => { if (status) status.textContent = "reconnecting…"; };
  }
})();
