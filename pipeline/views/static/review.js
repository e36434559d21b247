// The review desk's keys and verdicts (pipeline/views/review.py). Reads only the page's DOM:
// no catalog data is inside this script. Arrows move, Enter opens, f favourite, x reject,
// u clear, n / p the next / previous page (on a design's page: the next / previous design).
(function () {
  'use strict';
  var token = document.querySelector('meta[name="csrf-token"]').getAttribute('content');
  var ack = document.getElementById('ack');
  var KEYS = { f: 'favourite', x: 'reject', u: 'clear' };

  function newKey() {  // the verdict's idempotence key: a retry sends the same one
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ('0' + b.toString(16)).slice(-2); }).join('');
  }

  function say(text, failed) {
    ack.textContent = text;
    ack.className = failed ? 'failed' : 'done';
  }

  function mark(el, verdict) {
    el.setAttribute('data-verdict', verdict === 'clear' ? '' : verdict);
    var shown = document.getElementById('verdict');
    if (shown && el.classList.contains('design')) shown.textContent = verdict === 'clear' ? 'none' : verdict;
  }

  function send(el, verdict) {
    var id = el.getAttribute('data-design');
    var body = new URLSearchParams({ design_id: id, verdict: verdict, verdict_id: newKey() });
    say(verdict + ': ' + id.slice(0, 12) + '… sending', false);
    function attempt(left) {
      return fetch('/verdict', {
        method: 'POST',
        headers: { 'X-CSRF-Token': token, 'Content-Type': 'application/x-www-form-urlencoded' },
        body: body.toString(),
        credentials: 'same-origin'
      }).then(function (response) {
        if (response.ok) return response.json();
        if (response.status >= 500 && left > 0) return attempt(left - 1);
        return response.text().then(function (text) { throw new Error(text.trim() || response.statusText); });
      }, function (err) {
        if (left > 0) return new Promise(function (r) { setTimeout(r, 500); }).then(function () { return attempt(left - 1); });
        throw err;
      });
    }
    return attempt(3).then(function (result) {
      mark(el, result.verdict);
      say(result.verdict + ': ' + id.slice(0, 12) + '… recorded' + (result.added ? '' : ' (already)'), false);
      document.body.setAttribute('data-last-verdict', result.verdict + ':' + id);
    }, function (err) {
      say(verdict + ': ' + id.slice(0, 12) + '… not recorded: ' + err.message, true);
    });
  }

  function follow(id, hash) {
    var link = document.getElementById(id);
    if (link && link.href) window.location.href = link.href + (hash || '');
  }

  var cards = Array.prototype.slice.call(document.querySelectorAll('.grid .card'));
  var design = document.querySelector('main.design');

  function columns() {
    if (cards.length < 2) return 1;
    var top = cards[0].offsetTop, n = 0;
    while (n < cards.length && cards[n].offsetTop === top) n += 1;
    return Math.max(1, n);
  }

  function focused() {
    var i = cards.indexOf(document.activeElement);
    return i;
  }

  function move(delta) {
    var i = focused();
    if (i < 0) { if (cards.length) cards[0].focus(); return; }
    var j = i + delta;
    if (j >= cards.length) { follow('next'); return; }
    if (j < 0) { follow('prev', '#last'); return; }  // back onto the previous page's last card
    cards[j].focus();
  }

  if (design) {
    Array.prototype.forEach.call(document.querySelectorAll('button[data-verdict]'), function (button) {
      button.addEventListener('click', function () { send(design, button.getAttribute('data-verdict')); });
    });
  }
  if (cards.length) {
    var marked = window.location.hash === '#last' ? cards[cards.length - 1] : cards[0];
    marked.focus();
  }

  document.addEventListener('keydown', function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var tag = (event.target && event.target.tagName) || '';
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
    var key = event.key;
    if (KEYS[key]) {
      var target = design || cards[focused()];
      if (target) { event.preventDefault(); send(target, KEYS[key]); }
      return;
    }
    if (design) {
      if (key === 'ArrowRight' || key === 'n') { event.preventDefault(); follow('next'); }
      else if (key === 'ArrowLeft' || key === 'p') { event.preventDefault(); follow('prev'); }
      else if (key === 'Escape' || key === 'g') { event.preventDefault(); follow('grid'); }
      return;
    }
    if (key === 'ArrowRight') { event.preventDefault(); move(1); }
    else if (key === 'ArrowLeft') { event.preventDefault(); move(-1); }
    else if (key === 'ArrowDown') { event.preventDefault(); move(columns()); }
    else if (key === 'ArrowUp') { event.preventDefault(); move(-columns()); }
    else if (key === 'n') { event.preventDefault(); follow('next'); }
    else if (key === 'p') { event.preventDefault(); follow('prev'); }
  });
})();
