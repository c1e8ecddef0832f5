/* The kiosk panel in the operator's (and staff member's) case card (docs/kiosk.md):
 * receives the kiosk's camera from kiosk_bridge over WebRTC (and sends this console's
 * camera when there is one), asks the kiosk for document stills and shows them with
 * zoom (up to 800 %), pan (drag) and rotation, and full screen (actual pixels, wheel and
 * pinch zoom, keyboard). Nothing is stored in the browser. */
(function () {
  "use strict";

  var views = {};  // call id -> {pc, stream, timer}
  var full = null;  // the still full screen while open: {panel, dialog, stage, img, scale, x, y, fit, pointers}
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRF-Token": csrfMeta ? csrfMeta.getAttribute("content") : ""},
      body: JSON.stringify(body || {})
    }).then(function (r) { return r.json().then(function (d) { d.status = r.status; return d; }); });
  }

  function waitGathering(pc) {
    if (pc.iceGatheringState === "complete") { return Promise.resolve(); }
    return new Promise(function (resolve) {
      var timer = setTimeout(resolve, 2000);
      pc.addEventListener("icegatheringstatechange", function () {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  function startView(panel) {
    var callId = panel.getAttribute("data-call");
    var existing = views[callId];
    if (existing) {
      // the case card was rendered again (a transfer step, a reload of the card): the
      // connection stays, the new panel gets the video, the stills and the card state
      if (existing.panel !== panel) {
        existing.panel = panel;
        existing.shown = {};
        if (existing.remote) { panel.querySelector(".kiosk-video").srcObject = existing.remote; }
        refreshStills(panel, existing);
        refreshCard(panel, existing);
      }
      return;
    }
    var view = {pc: null, stream: null, timer: null, shown: {}, panel: panel, remote: null};
    views[callId] = view;
    var pc = new RTCPeerConnection({iceServers: []});
    view.pc = pc;
    pc.ontrack = function (ev) {
      if (ev.track.kind === "video") {
        view.remote = ev.streams[0] || new MediaStream([ev.track]);
        view.panel.querySelector(".kiosk-video").srcObject = view.remote;
      }
    };
    var camera = navigator.mediaDevices && navigator.mediaDevices.getUserMedia ?
      navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}, audio: false})
        .catch(function () { return null; }) : Promise.resolve(null);
    camera.then(function (stream) {
      view.stream = stream;
      if (stream) { stream.getVideoTracks().forEach(function (t) { pc.addTrack(t, stream); }); }
      else { pc.addTransceiver("video", {direction: "recvonly"}); }
      return pc.createOffer();
    }).then(function (offer) { return pc.setLocalDescription(offer); })
      .then(function () { return waitGathering(pc); })
      .then(function () { return post(panel.getAttribute("data-view-url"), {sdp: pc.localDescription.sdp}); })
      .then(function (resp) {
        if (!resp.ok) { throw new Error(resp.error || resp.code); }
        return pc.setRemoteDescription({type: "answer", sdp: resp.sdp});
      })
      .then(function () { view.panel.querySelector(".kiosk-video-state").textContent = ""; })
      .catch(function (e) { view.panel.querySelector(".kiosk-video-state").textContent = String(e.message || e); });
    view.timer = setInterval(function () { refreshStills(view.panel, view); }, 2000);
    refreshCard(panel, view);
  }

  function stopView(callId) {
    var view = views[callId];
    if (!view) { return; }
    delete views[callId];
    clearInterval(view.timer);
    if (view.stream) { view.stream.getTracks().forEach(function (t) { t.stop(); }); }
    if (view.pc) { view.pc.close(); }
  }

  function refreshStills(panel, view) {
    fetch(panel.getAttribute("data-stills-url"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : {stills: []}; })
      .then(function (body) {
        var list = panel.querySelector(".kiosk-stills");
        (body.stills || []).forEach(function (id, i) {
          if (view.shown[id]) { return; }
          view.shown[id] = true;
          var li = document.createElement("li");
          var b = document.createElement("button");
          b.type = "button";
          b.className = "secondary small";
          b.setAttribute("data-kiosk-still", id);
          b.textContent = "#" + (Object.keys(view.shown).length);
          li.appendChild(b);
          list.appendChild(li);
          showStill(panel, id);
        });
      }).catch(function () {});
  }

  // ---- the My Number card: where the flow is (kiosk.card events), then the four items
  function refreshCard(panel, view) {
    var box = panel.querySelector("[data-kiosk-card]");
    if (!box) { return; }
    // steps come a few ms apart and their fetches can answer out of order: only the
    // newest one may change the panel (an older answer must not bring a past step back)
    var seq = (box.madoSeq || 0) + 1;
    box.madoSeq = seq;
    fetch(panel.getAttribute("data-card-url"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : {}; })
      .then(function (st) {
        if (box.madoSeq !== seq) { return; }
        var text = st.state ? (box.getAttribute("data-msg-" + st.state) || st.state) : "";
        // an error the panel knows (the card software on the kiosk PC is not running)
        // says what to do; the others add the kiosk's notice
        var known = st.state === "error" && st.error ?
          box.getAttribute("data-msg-error-" + st.error) : null;
        if (known) { text = known; }
        else if (st.state === "error") {
          text += st.notice ? " " + st.notice : "";
          if (st.tries_left !== null && st.tries_left !== undefined) {
            text += " " + box.getAttribute("data-msg-tries") + " " + st.tries_left;
          }
          if (st.detail) { text += " (" + st.detail + ")"; }
        }
        box.querySelector(".kiosk-card-state").textContent = text;
        box.setAttribute("data-card-state", st.state || "");
        box.setAttribute("data-card-error", st.state === "error" ? st.error || "" : "");
        // the items are fetched (and that view audited) once per panel, and again after
        // a new read; the panel remembers which read it shows
        var shownAt = box.getAttribute("data-card-shown");
        var fresh = st.state === "read" && shownAt !== st.at;
        if (st.has_data && (shownAt === null || fresh)) {
          box.setAttribute("data-card-shown", st.state === "read" ? st.at : "");
          return fetch(panel.getAttribute("data-card-url") + "/data",
                       {credentials: "same-origin", cache: "no-store"})
            .then(function (r) { return r.ok ? r.json() : {}; })
            .then(function (body) { showCard(box, body.items); });
        }
      }).catch(function () {});
  }

  function showCard(box, items) {
    if (!items) { return; }
    var en = (document.documentElement.lang || "ja").indexOf("en") === 0;
    var shown = {name: items.name, address: items.address,
                 birth: en ? items.birth : (items.birth_ja || items.birth),
                 sex: en ? items.sex_en : items.sex_ja};
    Array.prototype.forEach.call(box.querySelectorAll("[data-card-item]"), function (dd) {
      dd.textContent = shown[dd.getAttribute("data-card-item")] || "";
    });
    box.querySelector(".kiosk-card-items").hidden = false;
  }

  document.addEventListener("mado:kiosk-card", function (e) {
    var d = e.detail || {};
    var view = views[d.call_id];
    var panel = document.querySelector('[data-kiosk-panel][data-call="' + d.call_id + '"]');
    if (view && panel) { refreshCard(panel, view); }
  });

  // ---- the still viewer: zoom, pan, rotate with a CSS transform
  function viewer(panel) {
    var v = panel.querySelector(".kiosk-viewer");
    if (!v.mado) { v.mado = {zoom: 1, rotate: 0, x: 0, y: 0}; }
    return v;
  }
  function apply(panel) {
    var v = viewer(panel);
    var s = v.mado;
    var img = panel.querySelector(".kiosk-still");
    if (full && full.img === img) { fullApply(full); }
    else { img.style.transform = "translate(" + s.x + "px," + s.y + "px) scale(" + s.zoom + ") rotate(" + s.rotate + "deg)"; }
    panel.querySelector(".kiosk-zoom").textContent = Math.round(s.zoom * 100) + "%";
    v.setAttribute("data-zoom", String(Math.round(s.zoom * 100)));
    v.setAttribute("data-rotate", String(s.rotate));
  }
  function showStill(panel, id) {
    var v = viewer(panel);
    v.hidden = false;
    var img = panel.querySelector(".kiosk-still");
    img.src = panel.getAttribute("data-stills-url") + "/" + encodeURIComponent(id);
    v.setAttribute("data-still", id);
    v.mado = {zoom: 1, rotate: 0, x: 0, y: 0};
    apply(panel);
  }

  document.addEventListener("click", function (e) {
    var el = e.target.closest("[data-kiosk-action], [data-kiosk-still]");
    if (!el) { return; }
    var panel = el.closest("[data-kiosk-panel]");
    if (!panel) { return; }
    if (el.hasAttribute("data-kiosk-still")) { showStill(panel, el.getAttribute("data-kiosk-still")); return; }
    var action = el.getAttribute("data-kiosk-action");
    var s = viewer(panel).mado;
    if (action === "still") { post(panel.getAttribute("data-still-request-url")); return; }
    if (action === "card") {
      post(panel.getAttribute("data-card-request-url")).then(function (resp) {
        var view = views[panel.getAttribute("data-call")];
        if (resp.ok && view) { refreshCard(panel, view); }
        else if (!resp.ok) {
          panel.querySelector(".kiosk-card-state").textContent = resp.error || resp.code || "";
        }
      });
      return;
    }
    if (action === "full") { openFull(panel); return; }
    if (action.indexOf("full-") === 0) { fullAction(action.slice(5)); return; }
    if (action === "zoom-in") { s.zoom = Math.min(8, s.zoom * 1.5); }
    else if (action === "zoom-out") { s.zoom = Math.max(0.25, s.zoom / 1.5); }
    else if (action === "rotate") { s.rotate = (s.rotate + 90) % 360; }
    else if (action === "fit") { s.zoom = 1; s.x = 0; s.y = 0; }
    apply(panel);
  });

  var drag = null;
  document.addEventListener("pointerdown", function (e) {
    var port = e.target.closest(".kiosk-viewport");
    if (!port) { return; }
    var panel = port.closest("[data-kiosk-panel]");
    drag = {panel: panel, x: e.clientX, y: e.clientY};
    port.setPointerCapture(e.pointerId);
    e.preventDefault();
  });
  document.addEventListener("pointermove", function (e) {
    if (!drag) { return; }
    var s = viewer(drag.panel).mado;
    s.x += e.clientX - drag.x;
    s.y += e.clientY - drag.y;
    drag.x = e.clientX;
    drag.y = e.clientY;
    apply(drag.panel);
  });
  document.addEventListener("pointerup", function () { drag = null; });

  // ---- the still full screen: a modal <dialog>; the viewer's <img> moves into it, so the
  // still is not fetched (and its view audited) again. The image is sized in CSS pixels
  // (scale = CSS px per image px; 1:1 is 1 / devicePixelRatio) and placed by its centre
  // (x, y) in the stage; the rotation is the small viewer's.
  function current() {
    if (full && !(full.dialog.isConnected && full.dialog.open)) { full = null; }
    return full;
  }
  function fullSize(f) {  // the image's on-screen size at scale 1, rotated
    var w = f.img.naturalWidth || 1, h = f.img.naturalHeight || 1;
    return viewer(f.panel).mado.rotate % 180 ? {w: h, h: w} : {w: w, h: h};
  }
  function fitScale(f) {
    var d = fullSize(f);
    return Math.min(f.stage.clientWidth / d.w, f.stage.clientHeight / d.h);
  }
  function fullApply(f) {
    var dpr = window.devicePixelRatio || 1;
    var W = f.stage.clientWidth, H = f.stage.clientHeight;
    var d = fullSize(f), dw = d.w * f.scale, dh = d.h * f.scale;
    // the stage's centre always shows some of the picture
    f.x = Math.min(Math.max(f.x, W / 2 - dw / 2), W / 2 + dw / 2);
    f.y = Math.min(Math.max(f.y, H / 2 - dh / 2), H / 2 + dh / 2);
    var w = (f.img.naturalWidth || 1) * f.scale, h = (f.img.naturalHeight || 1) * f.scale;
    // the rotated box's corner on a device pixel, so that 1:1 is sharp
    var left = Math.round((f.x - dw / 2) * dpr) / dpr + (dw - w) / 2;
    var top = Math.round((f.y - dh / 2) * dpr) / dpr + (dh - h) / 2;
    var rotate = viewer(f.panel).mado.rotate;
    f.img.style.width = w + "px";
    f.img.style.height = h + "px";
    f.img.style.transform = "translate(" + left + "px," + top + "px) rotate(" + rotate + "deg)";
    var zoom = String(Math.round(f.scale * dpr * 100));
    f.dialog.querySelector(".kiosk-full-zoom").textContent = zoom + "%";
    f.dialog.setAttribute("data-zoom", zoom);  // per cent of actual pixels
    f.dialog.setAttribute("data-rotate", String(rotate));
    f.dialog.setAttribute("data-fit", f.fit ? "1" : "0");
  }
  function fullFit(f) {
    f.scale = fitScale(f);
    f.x = f.stage.clientWidth / 2;
    f.y = f.stage.clientHeight / 2;
    f.fit = true;
    fullApply(f);
  }
  // zoom by k around the stage point (px, py): the image point under it stays there
  function fullZoom(f, k, px, py) {
    var fit = fitScale(f);
    var scale = Math.min(Math.max(f.scale * k, fit / 4), Math.max(8 / (window.devicePixelRatio || 1), fit));
    k = scale / f.scale;
    f.x = px - k * (px - f.x);
    f.y = py - k * (py - f.y);
    f.scale = scale;
    f.fit = false;
    fullApply(f);
  }
  function fullPan(f, dx, dy) {
    f.x += dx;
    f.y += dy;
    f.fit = false;
    fullApply(f);
  }
  function fullAction(action) {
    var f = current();
    if (!f) { return; }
    var cx = f.stage.clientWidth / 2, cy = f.stage.clientHeight / 2;
    if (action === "close") { f.dialog.close(); }
    else if (action === "fit") { fullFit(f); }
    else if (action === "actual") { fullZoom(f, 1 / (window.devicePixelRatio || 1) / f.scale, cx, cy); }
    else if (action === "zoom-in") { fullZoom(f, 1.25, cx, cy); }
    else if (action === "zoom-out") { fullZoom(f, 1 / 1.25, cx, cy); }
    else if (action === "rotate") {
      var s = viewer(f.panel).mado;
      s.rotate = (s.rotate + 90) % 360;
      // a quarter turn clockwise around the stage's centre
      var dx = f.x - cx, dy = f.y - cy;
      f.x = cx - dy;
      f.y = cy + dx;
      if (f.fit) { fullFit(f); } else { fullApply(f); }
      apply(f.panel);
    }
  }
  function openFull(panel) {
    var dialog = panel.querySelector(".kiosk-full");
    var img = panel.querySelector(".kiosk-still");
    if (!dialog || !img || dialog.open) { return; }
    var stage = dialog.querySelector(".kiosk-full-stage");
    stage.appendChild(img);
    full = {panel: panel, dialog: dialog, stage: stage, img: img, scale: 1, x: 0, y: 0,
            fit: true, pointers: {}};
    dialog.showModal();
    stage.focus();
    fullFit(full);
  }
  function closedFull(dialog) {  // Esc, the close button: the <img> goes back to the viewer
    if (!full || full.dialog !== dialog) { return; }
    var f = full;
    full = null;
    f.img.style.width = "";
    f.img.style.height = "";
    var port = f.panel.querySelector(".kiosk-viewport");
    if (port) { port.appendChild(f.img); }
    apply(f.panel);
  }
  // close and load do not bubble: caught on the way down
  document.addEventListener("close", function (e) { closedFull(e.target); }, true);
  document.addEventListener("load", function (e) {
    var f = current();
    if (f && e.target === f.img) { fullFit(f); }  // a new still while full screen
  }, true);
  window.addEventListener("resize", function () {
    var f = current();
    if (f) { if (f.fit) { fullFit(f); } else { fullApply(f); } }
  });

  document.addEventListener("wheel", function (e) {
    var f = current();
    if (!f || !e.target.closest(".kiosk-full-stage")) { return; }
    e.preventDefault();
    var dy = e.deltaY * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1);
    var r = f.stage.getBoundingClientRect();
    fullZoom(f, Math.exp(-Math.max(-300, Math.min(300, dy)) / 500), e.clientX - r.left, e.clientY - r.top);
  }, {passive: false});

  // one pointer pans, two pinch: zoom around their midpoint, which also pans
  function pinch(f) {
    var p = Object.keys(f.pointers).slice(0, 2).map(function (id) { return f.pointers[id]; });
    return {x: (p[0].x + p[1].x) / 2, y: (p[0].y + p[1].y) / 2,
            d: Math.max(1, Math.hypot(p[0].x - p[1].x, p[0].y - p[1].y))};
  }
  document.addEventListener("pointerdown", function (e) {
    var f = current();
    var stage = e.target.closest(".kiosk-full-stage");
    if (!f || !stage) { return; }
    f.pointers[e.pointerId] = {x: e.clientX, y: e.clientY};
    stage.setPointerCapture(e.pointerId);
    stage.focus();
    e.preventDefault();
  });
  document.addEventListener("pointermove", function (e) {
    var f = current();
    var before = f && f.pointers[e.pointerId];
    if (!before) { return; }
    var n = Object.keys(f.pointers).length;
    var a = n >= 2 ? pinch(f) : null;
    f.pointers[e.pointerId] = {x: e.clientX, y: e.clientY};
    if (!a) { fullPan(f, e.clientX - before.x, e.clientY - before.y); return; }
    var b = pinch(f), r = f.stage.getBoundingClientRect();
    f.x += b.x - a.x;
    f.y += b.y - a.y;
    fullZoom(f, b.d / a.d, b.x - r.left, b.y - r.top);
  });
  function pointerGone(e) { if (full) { delete full.pointers[e.pointerId]; } }
  document.addEventListener("pointerup", pointerGone);
  document.addEventListener("pointercancel", pointerGone);

  // arrows move the view (the picture the other way), + and - zoom, 0 fits, 1 is 1:1
  document.addEventListener("keydown", function (e) {
    var f = current();
    if (!f || e.ctrlKey || e.metaKey || e.altKey) { return; }
    var step = (e.shiftKey ? 0.5 : 0.1) * Math.min(f.stage.clientWidth, f.stage.clientHeight);
    var pans = {ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step]};
    var actions = {"+": "zoom-in", "=": "zoom-in", "-": "zoom-out", "0": "fit", "1": "actual"};
    if (pans[e.key]) { fullPan(f, pans[e.key][0], pans[e.key][1]); }
    else if (actions[e.key]) { fullAction(actions[e.key]); }
    else { return; }
    e.preventDefault();
  });

  // panels come and go with the case card (loaded by console.js)
  function scan() {
    var live = {};
    Array.prototype.forEach.call(document.querySelectorAll("[data-kiosk-panel]"), function (panel) {
      var card = panel.closest("#case-card");
      var callId = panel.getAttribute("data-call");
      if (card && card.getAttribute("data-status") === "ended") { return; }
      live[callId] = true;
      startView(panel);
    });
    Object.keys(views).forEach(function (callId) { if (!live[callId]) { stopView(callId); } });
  }
  new MutationObserver(scan).observe(document.body, {childList: true, subtree: true,
                                                     attributes: true, attributeFilter: ["data-status"]});
  scan();
})();
