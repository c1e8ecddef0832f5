/* The remote-window kiosk page (docs/kiosk.md).
 *
 * One page, touch only. The kiosk's credential comes from the start URL's fragment
 * (#<kiosk id>:<secret>; the browser never sends a fragment to a server) and is kept in
 * this closure only. Nothing is written to any browser storage. When a session ends the
 * page stops every media track, closes the peer connection, clears storage, caches and
 * cookies for good measure, and finally reloads itself, which drops all JS memory and
 * DOM of the session.
 */
(function () {
  "use strict";

  var cfg = JSON.parse(document.body.getAttribute("data-config"));
  var credential = "";
  try { credential = decodeURIComponent(location.hash.slice(1)); } catch (e) { credential = ""; }
  var lang = "ja";
  var screen = "loading";
  var session = null;      // {id, token, pc, stream, poll, ...} while a session lives
  var surveyToken = null;  // the ended session's token, only for the 1-5 answer
  var idleTimer = null;
  var diag = [];           // diagnostic log: events and errors, never personal data
  var lastError = "";
  var rttMs = null;
  var heartbeatTimer = null;

  function note(text) {
    diag.push(new Date().toISOString() + " " + text);
    if (diag.length > 300) { diag.shift(); }
  }
  function fail(text) { lastError = text; note("error: " + text); }

  function t(key) { return (cfg.texts[lang] || cfg.texts.ja)[key] || key; }

  function applyTexts() {
    document.documentElement.lang = lang;
    document.title = t("title");
    Array.prototype.forEach.call(document.querySelectorAll("[data-t]"), function (el) {
      el.textContent = t(el.getAttribute("data-t"));
    });
    var box = document.getElementById("k-categories");
    box.textContent = "";
    cfg.categories.forEach(function (c) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "k-category";
      b.setAttribute("data-category", c.id);
      b.textContent = lang === "en" ? c.en : c.ja;
      box.appendChild(b);
    });
    var loc = document.getElementById("k-location");
    if (cfg.kiosk) { loc.textContent = lang === "en" ? cfg.kiosk.location_en : cfg.kiosk.location; }
    showHours();
  }

  function show(name) {
    screen = name;
    Array.prototype.forEach.call(document.querySelectorAll("[data-screen]"), function (el) {
      el.hidden = el.getAttribute("data-screen") !== name;
    });
    document.body.setAttribute("data-current", name);
    armIdle();
  }

  // ---- idle: no touch for idle_seconds outside a call -> back to the start
  function armIdle() {
    if (idleTimer) { clearTimeout(idleTimer); }
    if (["categories", "survey", "thanks", "error", "unavailable", "closed"].indexOf(screen) < 0) { return; }
    idleTimer = setTimeout(function () { note("idle reset"); resetPage(); },
                           cfg.idle_seconds * 1000);
  }

  // ---- server calls
  function api(method, path, body, useSession) {
    var headers = {"Accept": "application/json"};
    if (useSession) { headers["X-Kiosk-Session"] = useSession; }
    else { headers["Authorization"] = "Kiosk " + credential; }
    var init = {method: method, headers: headers, cache: "no-store", credentials: "omit"};
    if (body instanceof Blob) { init.body = body; headers["Content-Type"] = body.type; }
    else if (body !== undefined) { init.body = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
    var started = performance.now();
    return fetch(path, init).then(function (resp) {
      rttMs = Math.round(performance.now() - started);
      return resp.json().catch(function () { return {}; }).then(function (data) {
        data.status = resp.status;
        return data;
      });
    });
  }

  // ---- devices (fleet heartbeat)
  function deviceState() {
    var out = {camera: "missing", document_camera: "missing", microphone: "missing",
               speaker: "missing", card_reader: "unknown", keypad: "unknown"};
    var devs = navigator.mediaDevices && navigator.mediaDevices.enumerateDevices ?
      navigator.mediaDevices.enumerateDevices() : Promise.resolve([]);
    return devs.then(function (list) {
      var cams = list.filter(function (d) { return d.kind === "videoinput"; });
      if (cams.length) { out.camera = "ok"; }
      if (cams.length > 1 || cams.some(function (d) { return /doc|書画/i.test(d.label); })) {
        out.document_camera = "ok";
      } else if (cams.length) { out.document_camera = "shared"; }
      if (list.some(function (d) { return d.kind === "audioinput"; })) { out.microphone = "ok"; }
      if (list.some(function (d) { return d.kind === "audiooutput"; })) { out.speaker = "ok"; }
      if (!cfg.card_agent_url) { return out; }
      // the card agent on this PC: not answering is an error of the kiosk (the fleet view
      // alarms), no reader is a missing device; busy means it is reading a card
      return agentFetch("/status", {}, 3000).then(function (st) {
        var p = readerProblem(st);
        out.card_reader = !p ? "ok" : (p.error === "no-reader" ? "missing" : "error");
        if (p) { fail("card reader: " + p.error + (p.detail ? " (" + p.detail + ")" : "")); }
        return out;
      }).catch(function () { return out; });
    }).catch(function () { return out; });
  }

  function heartbeat() {
    return deviceState().then(function (devices) {
      return api("POST", "/kiosk/api/heartbeat", {
        version: cfg.version, devices: devices, rtt_ms: rttMs, last_error: lastError,
        screen: screen});
    }).then(function (resp) {
      lastError = "";
      (resp.actions || []).forEach(runAction);
    }).catch(function (e) { fail("heartbeat: " + e); });
  }

  function runAction(action) {
    note("remote action " + action);
    if (action === "reload") { if (!session) { resetPage(); } }
    else if (action === "device_check") { setTimeout(heartbeat, 100); }
    else if (action === "collect_log") { api("POST", "/kiosk/api/diagnostics", {log: diag}); }
  }

  // ---- a session
  function waitGathering(pc, limitMs) {
    if (pc.iceGatheringState === "complete") { return Promise.resolve(); }
    return new Promise(function (resolve) {
      var timer = setTimeout(resolve, limitMs);  // without a LAN, gathering may never end
      pc.addEventListener("icegatheringstatechange", function () {
        if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  function connect(category) {
    show("connecting");
    note("connect " + category);
    var s = {id: null, token: null, pc: null, stream: null, poll: null, ending: false, state: "new"};
    session = s;
    navigator.mediaDevices.getUserMedia({
      audio: {echoCancellation: true, noiseSuppression: true, autoGainControl: true},
      video: {width: {ideal: 1280}, height: {ideal: 720}}
    }).then(function (stream) {
      s.stream = stream;
      document.getElementById("k-self-video").srcObject = stream;
      var pc = new RTCPeerConnection({iceServers: cfg.ice_servers.map(function (u) { return {urls: u}; })});
      s.pc = pc;
      stream.getTracks().forEach(function (tr) {
        var sender = pc.addTrack(tr, stream);
        if (tr.kind === "video") {
          // the camera goes out only once an operator answers: a waiting kiosk costs the
          // bridge no video decoding (docs/kiosk.md, "Measured")
          s.video = {sender: sender, track: tr, on: false};
          sender.replaceTrack(null);
        }
      });
      pc.ontrack = function (ev) {
        var ms = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
        if (ev.track.kind === "audio") {
          var audio = document.getElementById("k-remote-audio");
          audio.srcObject = ms;
          audio.volume = parseFloat(document.getElementById("k-volume").value);
          audio.play().catch(function (e) { fail("audio play: " + e); });
        } else {
          document.getElementById("k-remote-video").srcObject = ms;
        }
      };
      pc.onconnectionstatechange = function () {
        note("connection " + pc.connectionState);
        if (pc.connectionState === "failed") { finish("network"); }
        if (pc.connectionState === "disconnected") {
          setTimeout(function () {
            if (session === s && pc.connectionState === "disconnected") { finish("network"); }
          }, 5000);
        }
      };
      return pc.createOffer().then(function (offer) {
        return pc.setLocalDescription(offer);
      }).then(function () {
        return waitGathering(pc, 2000);
      }).then(function () {
        return api("POST", "/kiosk/api/session", {category: category, sdp: pc.localDescription.sdp});
      }).then(function (resp) {
        if (!resp.ok) { throw new Error(resp.code || ("HTTP " + resp.status)); }
        if (session !== s) { return; }
        s.id = resp.session;
        s.token = resp.token;
        return pc.setRemoteDescription({type: "answer", sdp: resp.sdp}).then(function () {
          s.poll = setInterval(function () { poll(s); }, 1000);
          poll(s);
        });
      });
    }).catch(function (e) {
      fail("connect: " + e);
      if (session === s) { finish("error"); }
    });
  }

  function poll(s) {
    if (session !== s || !s.id) { return; }
    api("GET", "/kiosk/api/session/" + s.id, undefined, s.token).then(function (resp) {
      if (session !== s) { return; }
      if (resp.status === 404) { finish("call_end"); return; }
      if (!resp.ok) { return; }
      s.state = resp.state;
      if (resp.state === "queued" || resp.state === "connecting" || resp.state === "new") {
        s.waiting = false;
        if (screen !== "waiting") { show("waiting"); }
        document.getElementById("k-position").textContent = resp.position || "-";
        document.getElementById("k-expected").textContent =
          resp.expected_minutes !== undefined ? resp.expected_minutes : "-";
      } else if (resp.state === "connected" && screen !== "call") {
        show("call");
        if (s.video && !s.video.on) { s.video.on = true; s.video.sender.replaceTrack(s.video.track); }
      } else if (resp.state === "unavailable") {
        unavailable(s, resp);
      } else if (resp.state === "ended") {
        finish("call_end");
      }
      (resp.requests || []).forEach(function (r) {
        if (r === "still") { takeStill(); }
        else if (r === "card") { cardOpen(); }
      });
    }).catch(function (e) { fail("poll: " + e); });
  }

  // ---- nobody can answer (nobody logged in, everybody paused), or the service is closed:
  // the reason and the opening hours (the citizen also hears the city's announcement), and
  // the choice to wait, which puts the kiosk back in the queue as soon as someone can
  // answer, or to leave, which ends the session like any other (the purge)
  function unavailable(s, resp) {
    s.hours = resp.hours || null;
    showHours();
    var next = resp.reason === "closed" ? "closed" :
      (resp.wait || s.waiting ? "standby" : "unavailable");
    if (screen !== next) { note("unavailable " + resp.reason); show(next); }
  }

  function showHours() {
    var h = session && session.hours ? (session.hours[lang] || session.hours.ja) : null;
    Array.prototype.forEach.call(document.querySelectorAll("[data-hours]"), function (el) {
      el.textContent = h ? (h[el.getAttribute("data-hours")] || "") : "";
      el.hidden = !el.textContent;
    });
  }

  function waitForOperator() {
    var s = session;
    if (!s || !s.id || s.state !== "unavailable") { return; }
    s.waiting = true;
    show("standby");
    api("POST", "/kiosk/api/session/" + s.id + "/wait", {}, s.token).then(function (resp) {
      if (!resp.ok) { s.waiting = false; fail("wait: " + resp.code); poll(s); }
    }).catch(function (e) { s.waiting = false; fail("wait: " + e); });
  }

  // ---- document camera: a still at the camera's full resolution, for this session only
  function documentCamera() {
    return navigator.mediaDevices.enumerateDevices().then(function (list) {
      var cams = list.filter(function (d) { return d.kind === "videoinput"; });
      var doc = cams.filter(function (d) { return /doc|書画/i.test(d.label); })[0] ||
                (cams.length > 1 ? cams[1] : cams[0]);
      return doc ? doc.deviceId : undefined;
    });
  }

  function takeStill() {
    var s = session;
    if (!s || !s.id) { return; }
    var status = document.getElementById("k-doc-status");
    status.textContent = t("document_hint");
    documentCamera().then(function (deviceId) {
      var video = {width: {ideal: 3840}, height: {ideal: 2160}};
      if (deviceId) { video.deviceId = {exact: deviceId}; }
      return navigator.mediaDevices.getUserMedia({video: video, audio: false});
    }).then(function (stream) {
      var track = stream.getVideoTracks()[0];
      var grab = window.ImageCapture ? new ImageCapture(track).grabFrame() : Promise.reject(new Error("no ImageCapture"));
      return grab.then(function (bitmap) {
        var canvas = document.createElement("canvas");
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
        canvas.getContext("2d").drawImage(bitmap, 0, 0);
        bitmap.close();
        track.stop();
        return new Promise(function (resolve) { canvas.toBlob(resolve, "image/jpeg", 0.92); })
          .then(function (blob) { canvas.width = 0; canvas.height = 0; return blob; });
      }, function (e) { track.stop(); throw e; });
    }).then(function (blob) {
      if (session !== s) { return; }
      return api("POST", "/kiosk/api/session/" + s.id + "/still", blob, s.token);
    }).then(function (resp) {
      if (resp && resp.ok) { status.textContent = t("document_sent"); note("still sent"); }
      else if (resp) { fail("still: " + resp.code); }
    }).catch(function (e) { fail("still: " + e); status.textContent = t("error"); });
  }

  // ---- My Number card (docs/card_agent.md): consent, card, PIN, read, all on this PC.
  // The PIN is typed here and sent to the card agent on loopback only; the four items go
  // to the server over this session and are dropped from the page at once. Nothing of the
  // card is ever written into the page's DOM.
  var card = null;  // {step, pin: [digits], abort, retry} while the card dialog is open

  function cardOpen() {
    var s = session;
    if (!s || !s.id || s.state !== "connected") { return; }
    if (card) { cardWipe(); }
    card = {step: null, pin: [], abort: null, retry: "prepare", consented: false, session: s};
    document.getElementById("k-card").hidden = false;
    note("card requested");
    cardPrepare();
  }

  function cardPrepare() {
    // the card agent and the reader first: if they cannot read, the citizen is told so
    // (and the operator at once) instead of being asked to agree to a read that cannot be
    var c = card;
    if (!c) { return; }
    cardStep("prepare");
    agent("/status", undefined, 3000).then(function (st) {
      if (card !== c || c.step !== "prepare") { return; }
      var problem = readerProblem(st);
      if (problem) { cardError(problem); return; }
      cardStep("consent");
    }).catch(function () { /* stopped */ });
  }

  function cardStep(step) {
    if (!card) { return; }
    card.step = step;
    Array.prototype.forEach.call(document.querySelectorAll("[data-card-step]"), function (el) {
      el.hidden = el.getAttribute("data-card-step") !== step;
    });
    document.getElementById("k-card").setAttribute("data-step", step);
  }

  function cardReport(state, extra) {
    var c = card;
    if (!c || !c.session.id) { return Promise.resolve({}); }
    var s = c.session;
    var body = {state: state};
    Object.keys(extra || {}).forEach(function (k) { body[k] = extra[k]; });
    function send() {
      return api("POST", "/kiosk/api/session/" + s.id + "/card", body, s.token)
        .then(function (resp) { if (!resp.ok) { fail("card report " + state + ": " + resp.code); } return resp; })
        .catch(function (e) { fail("card report: " + e); return {}; });
    }
    // one report at a time, in the order of the steps: two reports in flight can be
    // handled by the server in either order, and a step found a few ms later (the card
    // agent not answering) would be overwritten by the one before it (waiting for the card)
    s.cardReports = (s.cardReports || Promise.resolve({})).then(send);
    return s.cardReports;
  }

  // an error the page finds itself, shaped like the card agent's error answers
  function pageError(id, message, notice) {
    return {status: 0, error: id, message_ja: cfg.texts.ja[message],
            message_en: cfg.texts.en[message], operator_notice_ja: cfg.texts.ja[notice],
            operator_notice_en: cfg.texts.en[notice]};
  }

  function agentDown(detail) {
    var e = pageError("agent-unavailable", "card_agent_down", "card_notice_agent_down");
    if (detail) { e.detail = detail; }
    return e;
  }

  // what keeps the reader from reading, from a /status answer (or an error answer)
  function readerProblem(st) {
    if (st.error === "busy") { return null; }
    if (st.error) {
      return ["no-reader", "reader-unplugged", "pcsc-unavailable"].indexOf(st.error) >= 0 ? st :
        agentDown(st.error === "agent-unavailable" ? st.detail : "status " + st.status + " " + st.error);
    }
    if (!st.pcsc) { return pageError("pcsc-unavailable", "card_agent_down", "card_notice_pcsc"); }
    if (!st.reader) { return pageError("no-reader", "card_no_reader", "card_notice_no_reader"); }
    return null;
  }

  // the card agent on this PC, with a time limit: a process that does not answer is as
  // good as none. Error answers carry the messages to show; an abort by `ctrl` is thrown.
  function agentFetch(path, init, limitMs, ctrl) {
    if (!cfg.card_agent_url) { return Promise.resolve(agentDown("no card_agent_url")); }
    ctrl = ctrl || (window.AbortController ? new AbortController() : null);
    var late = false;
    var timer = ctrl ? setTimeout(function () { late = true; ctrl.abort(); }, limitMs) : null;
    var opts = {cache: "no-store", credentials: "omit", signal: ctrl ? ctrl.signal : undefined};
    Object.keys(init || {}).forEach(function (k) { opts[k] = init[k]; });
    return fetch(cfg.card_agent_url + path, opts).then(function (resp) {
      return resp.json().catch(function () { return {}; }).then(function (data) {
        clearTimeout(timer);
        data.status = resp.status;
        return data;
      });
    }).catch(function (e) {
      clearTimeout(timer);
      if (e && e.name === "AbortError" && !late) { throw e; }
      return agentDown(late ? "no answer in " + limitMs / 1000 + " s" : "not reachable");
    });
  }

  function agent(path, init, limitMs) {
    var c = card;
    if (!c) { return Promise.reject(new Error("closed")); }
    c.abort = window.AbortController ? new AbortController() : null;
    return agentFetch(path, init, limitMs, c.abort);
  }

  function cardAgree() {
    if (!card) { return; }
    card.consented = true;
    cardReport("consented").then(cardWaitForCard);
  }

  function cardWaitForCard() {
    var c = card;
    if (!c) { return; }
    cardStep("insert");
    cardReport("waiting_card");
    (function wait() {
      if (card !== c || c.step !== "insert") { return; }
      agent("/status?wait=10", undefined, 15000).then(function (st) {
        if (card !== c || c.step !== "insert") { return; }
        var problem = readerProblem(st);
        if (problem) { cardError(problem); return; }
        if (st.card) { cardCheck(); } else { wait(); }
      }).catch(function () { /* stopped */ });
    })();
  }

  function cardCheck() {
    var c = card;
    cardStep("checking");
    agent("/card", undefined, 10000).then(function (resp) {
      if (card !== c) { return; }
      if (resp.status !== 200) { cardError(resp); return; }
      cardPin(resp.tries_left, resp["warning_" + lang] || "");
    }).catch(function () {});
  }

  function cardPin(tries, warning) {
    if (!card) { return; }
    cardClearPin();
    document.getElementById("k-card-tries").textContent = tries === undefined ? "-" : String(tries);
    var warn = document.getElementById("k-card-warning");
    warn.textContent = warning || "";
    warn.hidden = !warning;
    cardStep("pin");
    cardReport("pin");
  }

  function cardShowPin() {
    var n = card ? card.pin.length : 0;
    Array.prototype.forEach.call(document.querySelectorAll("#k-card-pin span"), function (el, i) {
      el.className = i < n ? "on" : "";
    });
    document.querySelector("[data-card='ok']").disabled = n !== 4;
  }

  function cardDigit(d) {
    if (!card || card.step !== "pin" || card.pin.length >= 4) { return; }
    card.pin.push(d);
    cardShowPin();
  }

  function cardClearPin() {
    if (card) { for (var i = 0; i < card.pin.length; i++) { card.pin[i] = "0"; } card.pin.length = 0; }
    cardShowPin();
  }

  function cardSubmit() {
    var c = card;
    if (!c || c.step !== "pin" || c.pin.length !== 4) { return; }
    var body = JSON.stringify({pin: c.pin.join("")});
    cardClearPin();
    cardStep("reading");
    cardReport("reading");
    agent("/read", {method: "POST", headers: {"Content-Type": "application/json"}, body: body}, 20000)
      .then(function (resp) {
        body = null;
        if (card !== c) { return; }
        if (resp.status !== 200) { cardError(resp); return; }
        var items = {name: resp.name, address: resp.address, birth: resp.birth, sex: resp.sex};
        resp = null;
        return cardReport("read", {items: items}).then(function (r) {
          items = null;
          if (card !== c) { return; }
          if (!r.ok) { cardError({message_ja: t("error"), message_en: t("error")}); return; }
          note("card read");
          cardStep("done");
          setTimeout(function () { if (card === c && c.step === "done") { cardClose(); } }, 8000);
        });
      }).catch(function () { body = null; });
  }

  function cardError(resp) {
    var c = card;
    if (!c) { return; }
    var id = resp.error || "unexpected-response";
    note("card error " + id);
    document.getElementById("k-card-error").textContent = resp["message_" + lang] || t("error");
    // what "try again" does: another PIN after a wrong one, the card again otherwise;
    // a locked card cannot be retried here; before the citizen agreed, the reader again
    c.retry = !c.consented ? "prepare" :
      (id === "wrong-pin" ? "pin" : (id === "pin-locked" ? "" : "insert"));
    document.querySelector("[data-card='retry']").hidden = !c.retry;
    cardStep("error");
    var extra = {error: id};
    if (typeof resp.tries_left === "number") { extra.tries_left = resp.tries_left; }
    ["operator_notice_ja", "operator_notice_en", "detail"].forEach(function (k) {
      if (typeof resp[k] === "string") { extra[k] = resp[k].slice(0, 200); }
    });
    cardReport("error", extra);
  }

  function cardRetry() {
    var c = card;
    if (!c || !c.retry) { return; }
    // after a wrong PIN the counter is read again first (and the last-try warning shown)
    if (c.retry === "prepare") { cardPrepare(); }
    else if (c.retry === "pin") { cardCheck(); } else { cardWaitForCard(); }
  }

  function cardCancel(report) {
    if (!card) { return; }
    if (report) { cardReport("cancelled"); }
    cardClose();
  }

  function cardWipe() {
    if (!card) { return; }
    if (card.abort) { try { card.abort.abort(); } catch (e) { /* done */ } }
    cardClearPin();
    card = null;
  }

  function cardClose() {
    cardWipe();
    document.getElementById("k-card").hidden = true;
    document.getElementById("k-card-error").textContent = "";
    document.getElementById("k-card-warning").textContent = "";
  }

  // ---- the end of a session: hang up, erase, survey, reset
  function finish(reason) {
    var s = session;
    if (!s || s.ending) { return; }
    s.ending = true;
    session = null;
    note("finish " + reason);
    if (s.poll) { clearInterval(s.poll); }
    cardClose();
    // the hang-up goes first, so the server ends the session for the right reason rather
    // than seeing the connection drop; the media stop right after (or at once on error)
    var done = s.id ? api("POST", "/kiosk/api/session/" + s.id + "/hangup",
                          {reason: reason === "call_end" ? "kiosk_hangup" : reason}, s.token)
                          .catch(function () { return {}; })
                    : Promise.resolve({});
    var timer = setTimeout(function () { stopMedia(s); }, 1500);
    done.then(function (resp) {
      clearTimeout(timer);
      stopMedia(s);
      var wasConnected = s.state === "connected";
      surveyToken = (resp.survey || (resp.status === 404 && wasConnected)) ? s.token : null;
      s.id = s.token = null;
      wipe();
      if (reason === "error") {
        document.getElementById("k-error-text").textContent = t("error");
        show("error");
      } else if (surveyToken) {
        show("survey");
      } else {
        thanks();
      }
    });
  }

  function stopMedia(s) {
    if (s.stopped) { return; }
    s.stopped = true;
    if (s.stream) { s.stream.getTracks().forEach(function (tr) { tr.stop(); }); }
    if (s.pc) {
      s.pc.getSenders().forEach(function (sn) { if (sn.track) { sn.track.stop(); } });
      s.pc.getReceivers().forEach(function (r) { if (r.track) { r.track.stop(); } });
      s.pc.close();
    }
    ["k-remote-video", "k-self-video", "k-remote-audio"].forEach(function (id) {
      var el = document.getElementById(id);
      if (el.srcObject) { el.srcObject = null; }
      el.removeAttribute("src");
    });
    s.stream = null;
    s.pc = null;
  }

  function wipe() {
    // The page never stores anything, but a session must leave nothing behind even if
    // something else did: storage, caches, cookies of this origin, session DOM.
    try { localStorage.clear(); } catch (e) { /* storage disabled */ }
    try { sessionStorage.clear(); } catch (e) { /* storage disabled */ }
    if (window.caches) {
      caches.keys().then(function (names) { names.forEach(function (n) { caches.delete(n); }); });
    }
    if (window.indexedDB && indexedDB.databases) {
      indexedDB.databases().then(function (dbs) {
        dbs.forEach(function (d) { if (d.name) { indexedDB.deleteDatabase(d.name); } });
      });
    }
    document.cookie.split(";").forEach(function (c) {
      var name = c.split("=")[0].trim();
      if (name) { document.cookie = name + "=; expires=Thu, 01 Jan 1970 00:00:00 GMT; path=/"; }
    });
    document.getElementById("k-position").textContent = "-";
    document.getElementById("k-expected").textContent = "-";
    document.getElementById("k-doc-status").textContent = "";
    Array.prototype.forEach.call(document.querySelectorAll("[data-hours]"), function (el) {
      el.textContent = "";
      el.hidden = true;
    });
  }

  function thanks() {
    show("thanks");
    setTimeout(resetPage, 5000);
  }

  function resetPage() {
    if (session) { finish("idle"); return; }
    surveyToken = null;
    wipe();
    location.reload();  // drops every bit of JS memory and DOM of the last user
  }

  function answerSurvey(score) {
    var token = surveyToken;
    surveyToken = null;
    if (!token) { thanks(); return; }
    api("POST", "/kiosk/api/survey", {score: score}, token)
      .catch(function (e) { fail("survey: " + e); })
      .then(thanks);
  }

  // ---- wiring
  document.addEventListener("contextmenu", function (e) { e.preventDefault(); });
  document.addEventListener("pointerdown", armIdle, {passive: true});
  document.addEventListener("keydown", armIdle);
  // the kiosk's physical numeric keypad types the PIN too (its keys arrive as key presses)
  document.addEventListener("keydown", function (e) {
    if (!card || card.step !== "pin") { return; }
    if (/^[0-9]$/.test(e.key)) { cardDigit(e.key); }
    else if (e.key === "Backspace") { card.pin.pop(); cardShowPin(); }
    else if (e.key === "Enter") { cardSubmit(); }
    else { return; }
    e.preventDefault();
  });
  document.addEventListener("click", function (e) {
    var el = e.target.closest("button");
    if (!el) { return; }
    if (el.id === "k-start") { show("categories"); return; }
    if (el.id === "k-lang") { lang = lang === "ja" ? "en" : "ja"; applyTexts(); return; }
    if (el.hasAttribute("data-category")) { connect(el.getAttribute("data-category")); return; }
    if (el.hasAttribute("data-score")) { answerSurvey(parseInt(el.getAttribute("data-score"), 10)); return; }
    if (el.hasAttribute("data-pin")) { cardDigit(el.getAttribute("data-pin")); return; }
    var c = el.getAttribute("data-card");
    if (c === "agree") { cardAgree(); return; }
    if (c === "decline") { cardReport("declined"); cardClose(); return; }
    if (c === "cancel") { cardCancel(true); return; }
    if (c === "clear") { if (card) { card.pin.pop(); cardShowPin(); } return; }
    if (c === "ok") { cardSubmit(); return; }
    if (c === "retry") { cardRetry(); return; }
    if (c === "close") { cardClose(); return; }
    var action = el.getAttribute("data-action");
    if (action === "back") { show("welcome"); }
    else if (action === "hangup") { finish("kiosk_hangup"); }
    else if (action === "wait") { waitForOperator(); }
    else if (action === "document") { takeStill(); }
    else if (action === "reset") { resetPage(); }
  });
  document.getElementById("k-volume").addEventListener("input", function (e) {
    document.getElementById("k-remote-audio").volume = parseFloat(e.target.value);
  });
  window.addEventListener("error", function (e) { fail("script: " + e.message); });
  window.addEventListener("pagehide", function () { if (session) { finish("kiosk_hangup"); } });

  applyTexts();
  api("POST", "/kiosk/api/hello").then(function (resp) {
    if (!resp.ok) { show("unregistered"); return; }
    cfg.kiosk = resp;
    applyTexts();
    show("welcome");
    heartbeat();
    heartbeatTimer = setInterval(heartbeat, cfg.heartbeat_seconds * 1000);
  }).catch(function (e) { fail("hello: " + e); show("unregistered"); });

  window.madoKiosk = {state: function () {
    return {screen: screen, session: !!session, card: card ? card.step : null};
  }};
})();
