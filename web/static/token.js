// The token page: a copy button and a live countdown to the token's expiry.
// The countdown runs on the browser's monotonic clock from the page's
// arrival (data-remaining-ms, from the server's clock): the browser's wall
// clock may be off. No framework, no inline script.
"use strict";
(function () {
  const countdown = document.getElementById("countdown");
  const copy = document.getElementById("copy");
  const copied = document.getElementById("copied");
  const token = document.getElementById("token");
  const deadline = performance.now() + Number(countdown.dataset.remainingMs);

  function tick() {
    const left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    if (left === 0) {
      countdown.textContent = "no time: it has expired";
      token.classList.add("expired");
      copy.disabled = true;
      return;
    }
    const seconds = String(left % 60).padStart(2, "0");
    countdown.textContent = Math.floor(left / 60) + ":" + seconds;
    setTimeout(tick, 250);
  }

  function said(text) {
    copied.textContent = text;
  }

  copy.addEventListener("click", function () {
    const text = copy.dataset.token;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { said("Copied"); },
        function () { said("Select it and copy it yourself"); }
      );
      return;
    }
    // Plain http from another host is no secure context: select the token,
    // and ask the older way.
    const range = document.createRange();
    range.selectNodeContents(token);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    said(document.execCommand("copy") ? "Copied" : "Selected: copy it now");
  });

  tick();
})();
