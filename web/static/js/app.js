// Small progressive enhancements; every page works without this file.
// No inline scripts anywhere (Content-Security-Policy: script-src 'self').
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // JSON requests from page scripts carry the CSRF token in a header.
  window.madoguchi = {
    csrfToken: csrfToken,
    postJSON: function (url, body) {
      return fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
        body: JSON.stringify(body || {})
      });
    }
  };

  // <form data-confirm="..."> asks before submitting (e.g. disabling an account).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // Focus the first invalid field so screen-reader and keyboard users land on the error.
  document.addEventListener("DOMContentLoaded", function () {
    var invalid = document.querySelector('[aria-invalid="true"]');
    if (invalid) { invalid.focus(); }
  });
})();
