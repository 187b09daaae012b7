// audit-web's console: the session page's player, command moments, live feed.
// Text from the store is only ever set with textContent, never as HTML.
(function () {
  "use strict";
  var dataEl = document.getElementById("player-data");
  if (!dataEl || typeof AsciinemaPlayer === "undefined") {
    return;
  }
  var data = JSON.parse(dataEl.textContent);
  var el = document.getElementById("player");
  var timeEl = document.getElementById("player-time");
  var player;
  if (data.isLive) {
    player = AsciinemaPlayer.create(
      { driver: "eventsource", url: data.live, bufferTime: 0 },
      el,
      { fit: "width", autoPlay: true }
    );
  } else {
    // No idle cut: the player's clock is the session's own, so a command's
    // offset in the list is its moment in the player.
    player = AsciinemaPlayer.create(data.cast, el, {
      fit: "width",
      preload: true,
      idleTimeLimit: 1e9,
      markers: data.markers
    });
  }
  window.consolePlayer = player;

  function moment() {
    var m = /^#t=([0-9]{1,9}(?:\.[0-9]{1,6})?)$/.exec(window.location.hash);
    return m ? parseFloat(m[1]) : null;
  }

  function mark(t) {
    var rows = document.querySelectorAll("#commands a.seek");
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i].closest("tr");
      row.classList.toggle("current", parseFloat(rows[i].dataset.t) === t);
    }
  }

  function seekToMoment() {
    var t = moment();
    if (t === null || data.isLive) {
      return;
    }
    mark(t);
    player.seek(t);
  }

  window.addEventListener("hashchange", seekToMoment);
  seekToMoment();

  setInterval(function () {
    var t = player.getCurrentTime();
    if (typeof t === "number" && isFinite(t)) {
      timeEl.textContent = t.toFixed(2);
      timeEl.setAttribute("data-t", String(t));
    }
  }, 200);

  if (!data.isLive) {
    return;
  }
  var last = data.last;
  var table = document.getElementById("commands");
  var state = document.getElementById("live-state");

  function cell(tr, text, className) {
    var td = document.createElement("td");
    if (className) {
      var code = document.createElement("code");
      code.className = className;
      code.textContent = text;
      td.appendChild(code);
    } else {
      td.textContent = text;
    }
    tr.appendChild(td);
  }

  function clock(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var r = String(s % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + r : m + ":" + r;
  }

  function add(c) {
    var tr = document.createElement("tr");
    tr.id = "cmd-" + c.seq;
    if (c.risks.length) {
      tr.className = "risky";
    }
    cell(tr, String(c.seq));
    cell(tr, clock(c.offset));
    cell(tr, c.time);
    cell(tr, c.kind === "command" ? c.command : c.kind + ": " + c.command, "command");
    cell(tr, c.risks.join(" "));
    table.appendChild(tr);
    var none = document.getElementById("no-commands");
    if (none) {
      none.remove();
    }
  }

  function poll() {
    fetch(data.feed + "?after=" + last, { credentials: "same-origin" })
      .then(function (r) {
        return r.ok ? r.json() : null;
      })
      .then(function (feed) {
        if (!feed) {
          return;
        }
        feed.commands.forEach(function (c) {
          add(c);
          last = Math.max(last, c.seq);
        });
        if (feed.status !== "live") {
          state.textContent = "ended";
          document.getElementById("status").textContent = feed.status;
          document.getElementById("end-reason").textContent = feed.end_reason || "";
          var form = document.getElementById("terminate");
          if (form) {
            form.remove();
          }
          return;
        }
        setTimeout(poll, 1000);
      })
      .catch(function () {
        setTimeout(poll, 3000);
      });
  }
  setTimeout(poll, 1000);
})();
