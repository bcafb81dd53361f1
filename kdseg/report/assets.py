"""The report page's CSS and small inline scripts."""

from __future__ import annotations

# ------------------------------------------------------------------------------------------ HTML


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:0 18px 40px;color:#222}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
nav a{margin-right:.9em;font-size:.9em}p.note{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0}th,td{padding:3px 7px;border-bottom:1px solid #e5e5e5;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}td.l,th.l{text-align:left}
tr.best td{background:#e8f1ff;font-weight:600}tr.baseline td{background:#fff1f0}tr.failed td{color:#b00}tr.stopped td{color:#777}
figure{margin:.6em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}.kv td{text-align:left;white-space:normal}.scroll{overflow-x:auto}
#leaderboard .scroll{max-height:34em;overflow-y:auto}p.tools input{font-size:.9em;padding:2px 6px;width:24em}p.tools span{font-size:.85em;color:#555;margin-left:.6em}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
"""

# Marks on <body> how many images the page has and how many decoded (data-images, data-rendered); images
# below the fold load lazily, so with #check in the URL (what the tests open) they all load at once.
LOAD_CHECK = """
<script>
if (location.hash === '#check') {
  Array.prototype.forEach.call(document.images, function (i) { i.loading = 'eager'; });
}
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-rendered', String(ok.length));
  imgs.forEach(function (i) { i.setAttribute('data-ok', i.complete && i.naturalWidth > 0 ? '1' : '0'); });
});
</script>
"""


# Sorting and filtering of the leaderboard in the page itself (no server, no library): click a header
# to sort (again: reverse), type words to keep the rows that contain all of them.
TABLE_JS = """
<script>
(function () {
  var table = document.getElementById('lb'), input = document.getElementById('lb-filter');
  var count = document.getElementById('lb-count'), body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  function filter() {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    rows.forEach(function (r) {
      var text = r.textContent.toLowerCase();
      var keep = words.every(function (w) { return text.indexOf(w) >= 0; });
      r.style.display = keep ? '' : 'none';
      shown += keep ? 1 : 0;
    });
    count.textContent = shown + ' of ' + rows.length + ' trials';
  }
  function key(r, i) {
    var c = r.cells[i], v = c.getAttribute('data-v');
    return v === null ? c.textContent.trim().toLowerCase() : parseFloat(v);
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
    th.style.cursor = 'pointer';
    th.title = 'sort by this column (click again to reverse)';
    th.addEventListener('click', function () {
      var dir = th.getAttribute('data-dir') === 'asc' ? -1 : 1;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute('data-dir'); });
      th.setAttribute('data-dir', dir === 1 ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = key(a, i), y = key(b, i), nx = typeof x === 'number' && !isNaN(x);
        var ny = typeof y === 'number' && !isNaN(y);
        if (nx !== ny) { return nx ? -1 : 1; }  // empty cells last either way
        return (x < y ? -1 : x > y ? 1 : 0) * dir;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  input.addEventListener('input', filter);
  filter();
})();
</script>
"""
