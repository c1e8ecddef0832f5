// Live console: Server-Sent Events from /console/events refresh the parts of the page
// they concern. Pages work without it (forms post normally); no inline scripts (CSP).
(function () {
  "use strict";

  var root = document.getElementById("console");
  if (!root) { return; }
  var kind = root.getAttribute("data-console");
  var statusEl = document.getElementById("live-status");
  var msgEl = document.getElementById("console-messages");
  var currentCall = root.getAttribute("data-call") || "";

  function msg(name) { return msgEl ? (msgEl.getAttribute("data-" + name) || "") : ""; }
  function say(text) { if (statusEl) { statusEl.textContent = text; } }
  function fill(template, callId) {
    return (template || "").replace("CALL_ID", encodeURIComponent(callId));
  }
  function getHTML(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) { throw new Error(String(r.status)); }
      return r.text();
    });
  }

  // -- timers: "time in state" counts up locally (no requests) ---------------------
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function tick() {
    var now = Date.now() / 1000;
    var timers = document.querySelectorAll(".timer[data-since]");
    for (var i = 0; i < timers.length; i++) {
      var s = Math.max(0, Math.floor(now - parseFloat(timers[i].getAttribute("data-since"))));
      var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
      timers[i].textContent = (h ? h + ":" + pad(m) : m) + ":" + pad(s % 60);
    }
  }
  tick();
  window.setInterval(tick, 1000);

  // -- partial refreshes ----------------------------------------------------------
  // Refreshes of one part can overlap (events a few ms apart) and answer out of order:
  // only the newest request's answer may replace the part, never an older one.
  var generations = {};
  function newest(part, promise) {
    var n = (generations[part] || 0) + 1;
    generations[part] = n;
    return promise.then(function (html) {
      if (generations[part] !== n) { throw new Error("superseded"); }
      return html;
    });
  }
  function refreshState() {
    var url = root.getAttribute("data-state-url");
    if (!url || !document.getElementById("agent-state")) { return; }
    newest("state", getHTML(url)).then(function (html) {
      var el = document.getElementById("agent-state");
      if (el) { el.outerHTML = html; tick(); scheduleRefresh(); }
    }).catch(function () {});
  }
  // after-call work ends at a known time (app_queue's wrapuptime) without an event:
  // the part that shows it says when (data-refresh-at) and is fetched again then
  var refreshTimer = null;
  function scheduleRefresh() {
    if (refreshTimer) { window.clearTimeout(refreshTimer); refreshTimer = null; }
    var marks = document.querySelectorAll("[data-refresh-at]");
    var at = Infinity;
    for (var i = 0; i < marks.length; i++) {
      at = Math.min(at, parseFloat(marks[i].getAttribute("data-refresh-at")));
    }
    if (!isFinite(at)) { return; }
    var wait = Math.max(200, (at - Date.now() / 1000) * 1000 + 300);
    refreshTimer = window.setTimeout(function () {
      refreshTimer = null;
      if (kind === "supervisor") { refreshBoards(); } else { refreshState(); }
    }, wait);
  }
  function loadCard(callId) {
    var area = document.getElementById("case-area");
    if (!area || !callId) { return Promise.resolve(); }
    return getHTML(fill(root.getAttribute("data-card-url"), callId)).then(function (html) {
      currentCall = callId;
      root.setAttribute("data-call", callId);
      area.innerHTML = html;
    }).catch(function () {});
  }
  function refreshTransfers() {
    var box = document.getElementById("staff-transfers");
    var url = root.getAttribute("data-transfers-url");
    if (!box || !url) { return; }
    newest("transfers", getHTML(url)).then(function (html) { box.outerHTML = html; }).catch(function () {});
  }
  function refreshParts(callId, selectors) {
    // parts of the open card only: reloading all of it would lose what the operator is
    // typing (wrap-up, note) and reset the kiosk panel
    newest("parts:" + selectors.join(","), getHTML(fill(root.getAttribute("data-card-url"), callId))).then(function (html) {
      if (callId !== currentCall) { return; }
      var fresh = new DOMParser().parseFromString(html, "text/html");
      selectors.forEach(function (sel) {
        var part = fresh.querySelector(sel), old = document.querySelector("#case-card " + sel);
        if (part && old) { old.replaceWith(part); }
      });
    }).catch(function () {});
  }
  function refreshNotes(callId) {
    var box = document.querySelector('[data-notes-for="' + callId + '"]');
    if (!box) { return; }
    newest("notes:" + callId, getHTML(fill(root.getAttribute("data-notes-url"), callId)))
      .then(function (html) { box.innerHTML = html; }).catch(function () {});
  }
  var liveTimer = null;
  function refreshLive(callId) {
    if (liveTimer) { return; }
    liveTimer = window.setTimeout(function () {
      liveTimer = null;
      if (!document.querySelector('[data-live-for="' + callId + '"]')) { return; }
      newest("live:" + callId,
             getHTML(fill(root.getAttribute("data-card-url"), callId).replace(/\?.*$/, "") +
                     "/live"))
        .then(function (html) {
          var box = document.querySelector('[data-live-for="' + callId + '"]');
          if (box) { box.outerHTML = html; }
        }).catch(function () {});
    }, 500);
  }
  var boardTimer = null;
  function refreshBoards() {
    if (boardTimer) { return; }
    boardTimer = window.setTimeout(function () {
      boardTimer = null;
      var el = document.getElementById("boards");
      getHTML(root.getAttribute("data-board-url")).then(function (html) {
        el.innerHTML = html; tick(); scheduleRefresh();
      }).catch(function () {});
    }, 150);
  }

  // the callback list: reloaded (debounced) when a call or a queue place changes
  var callbacksTimer = null;
  function refreshCallbacks() {
    var url = root.getAttribute("data-callbacks-url");
    if (!url || callbacksTimer) { return; }
    callbacksTimer = window.setTimeout(function () {
      callbacksTimer = null;
      var el = document.getElementById("callbacks");
      if (!el) { return; }
      getHTML(url).then(function (html) { el.innerHTML = html; }).catch(function () {});
    }, 150);
  }

  scheduleRefresh();

  // -- the two-site form: the bar above the page, redrawn when a site changes --------
  function refreshSiteBar() {
    var bar = document.getElementById("site-bar");
    var url = bar && bar.getAttribute("data-site-bar-url");
    if (!url) { return; }
    fetch(url, {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (html === null) { return; }
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var fresh = holder.querySelector("#site-bar");
      var now = document.getElementById("site-bar");
      if (fresh && now) { now.replaceWith(fresh); }
    }).catch(function () { /* the next event tries again */ });
  }

  if (document.getElementById("site-bar")) { window.setInterval(refreshSiteBar, 10000); }

  // -- events ---------------------------------------------------------------------
  function handle(ev) {
    var d = ev.data || {};
    var type = String(ev.type || "");
    if (type.indexOf("call.") === 0 || type === "queue.caller" || type === "site.takeover") {
      refreshCallbacks();
    }
    if (type.indexOf("site.") === 0) { refreshSiteBar(); }
    if (ev.type === "command.result") {
      // a refusal is said in words; the machine-readable code stays out of the page
      say(d.ok ? msg("ok") : (msg("code-" + (d.code || "")) || msg("failed")));
      if (kind === "operator") { refreshState(); }
      return;
    }
    if (kind === "callbacks") { return; }
    if (kind === "supervisor") { refreshBoards(); return; }
    if (ev.type === "case.note" && d.call_id === currentCall) { refreshNotes(currentCall); return; }
    if (ev.type === "transcript.updated" && d.call_id === currentCall) { refreshLive(currentCall); return; }
    if (ev.type === "kiosk.card" && d.state === "read" && d.call_id === currentCall) {
      refreshParts(currentCall, [".earlier"]);  // the card tells who the citizen is
    }
    if (ev.type === "kiosk.card") {
      // the kiosk panel (kiosk_console.js) refreshes its card section
      document.dispatchEvent(new CustomEvent("mado:kiosk-card", {detail: d}));
      return;
    }
    if (ev.type === "call.ended" && d.call_id === currentCall) {
      say(msg("ended"));
      var card = document.getElementById("case-card");
      if (card) { card.setAttribute("data-status", "ended"); }
      // the card again from the server: its 通話中 badge becomes 終了, the wrap-up opens
      loadCard(currentCall);
      if (kind === "operator") { refreshState(); }
      return;
    }
    if (ev.type === "device.state" && kind === "operator" &&
        d.extension && d.extension === root.getAttribute("data-phone-extension")) {
      refreshState();
      return;
    }
    if (kind === "operator") {
      var me = root.getAttribute("data-endpoint");
      if (ev.type === "queue.member" && d.endpoint === me) { refreshState(); return; }
      if (ev.type === "queue.caller" && d.state === "connected" && d.agent === me) {
        loadCard(d.call_id).then(function () { say(msg("new-call")); refreshState(); });
        return;
      }
      if (ev.type === "call.transfer" && d.call_id === currentCall) {
        // the step in words (the machine's reason stays in the log, not on the page)
        say(msg("transfer") + " " + (msg("transfer-" + (d.result || "")) || msg("failed")));
        refreshParts(currentCall, [".case-status", ".transfer-panel"]);
      }
      return;
    }
    if (kind === "staff" && ev.type === "call.transfer") {
      refreshTransfers();
      var open = ["started", "ringing", "consulting", "answered"];
      if (open.indexOf(d.result) >= 0 && d.call_id !== currentCall) {
        loadCard(d.call_id).then(function () { say(msg("new-call")); });
      }
    }
  }

  var streamUrl = root.getAttribute("data-stream");
  if (streamUrl && window.EventSource) {
    var source = new window.EventSource(streamUrl);
    root.setAttribute("data-live", "connecting");
    source.onopen = function () { root.setAttribute("data-live", "open"); };
    source.onmessage = function (m) {
      try { handle(JSON.parse(m.data)); } catch (e) { /* a malformed event is skipped */ }
    };
    source.onerror = function () { root.setAttribute("data-live", "reconnecting"); say(msg("offline")); };
    source.addEventListener("expired", function () {
      source.close();
      say(msg("expired"));
      window.location.reload();
    });
  }

  // -- forms posted by script (answers are JSON) -----------------------------------
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-async")) { return; }
    event.preventDefault();
    // getAttribute: a field named "action" would shadow form.action
    fetch(form.getAttribute("action"), {
      method: "POST", credentials: "same-origin", body: new FormData(form),
      headers: { "X-CSRF-Token": window.madoguchi ? window.madoguchi.csrfToken() : "",
                 "X-Requested-With": "fetch" }
    }).then(function (r) { return r.json(); }).then(function (body) {
      say(body.message || body.error || "");
      if (body.ok && form.hasAttribute("data-reset")) { form.reset(); }
      if (body.ok && body.note_id && currentCall) { refreshNotes(currentCall); }
      if (body.ok && form.hasAttribute("data-refresh-callbacks")) { refreshCallbacks(); }
      if (body.ok && form.hasAttribute("data-refresh-card") && currentCall) { loadCard(currentCall); }
    }).catch(function () { say(msg("error")); });
  });

  // -- FAQ search in place ------------------------------------------------------------
  var faqForm = document.getElementById("faq-form");
  if (faqForm) {
    faqForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var q = document.getElementById("faq-q").value;
      getHTML(faqForm.getAttribute("action") + "?partial=1&q=" + encodeURIComponent(q)).then(function (html) {
        document.getElementById("faq-results").innerHTML = html;
      }).catch(function () { say(msg("error")); });
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest(".use-faq") : null;
    if (!button) { return; }
    var input = document.querySelector(".faq-items-input");
    if (!input) { return; }
    var ids = input.value.split(/[,、\s]+/).filter(Boolean);
    var id = button.getAttribute("data-item");
    if (ids.indexOf(id) < 0) { ids.push(id); }
    input.value = ids.join(", ");
  });
})();
