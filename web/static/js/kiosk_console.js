/* The kiosk panel in the operator's (and staff member's) case card (docs/kiosk.md):
 * receives the kiosk's camera from kiosk_bridge over WebRTC (and sends this console's
 * camera when there is one), asks the kiosk for document stills and shows them with
 * zoom (up to 800 %), pan (drag) and rotation. Nothing is stored in the browser. */
(function () {
  "use strict";

  var views = {};  // call id -> {pc, stream, timer}
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
        if (st.state === "error") {
          text += st.notice ? " " + st.notice : "";
          if (st.tries_left !== null && st.tries_left !== undefined) {
            text += " " + box.getAttribute("data-msg-tries") + " " + st.tries_left;
          }
          if (st.detail) { text += " (" + st.detail + ")"; }
        }
        box.querySelector(".kiosk-card-state").textContent = text;
        box.setAttribute("data-card-state", st.state || "");
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
    img.style.transform = "translate(" + s.x + "px," + s.y + "px) scale(" + s.zoom + ") rotate(" + s.rotate + "deg)";
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
