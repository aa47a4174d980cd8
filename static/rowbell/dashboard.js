/* The dashboard's charts, drawn with uPlot from the figures the page embeds (#rowbell-chart-data). */
(function () {
  "use strict";
  var COLOURS = {
    delivered: "#2e7d32", sent: "#66bb6a", opened: "#1e88e5", clicked: "#5e35b1",
    queued: "#9e9e9e", sending: "#78909c", held: "#f9a825", skipped: "#bdbdbd", discarded: "#8d6e63",
    failed: "#c62828", bounced: "#ef6c00", complained: "#ad1457"
  };
  var LATENCY = {p50: "#1e88e5", p90: "#f9a825", p99: "#c62828"};
  var source = document.getElementById("rowbell-chart-data");
  if (!source || typeof uPlot === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  window.rowbellCharts = {};

  function width(el) { return Math.max(320, el.clientWidth || el.parentNode.clientWidth || 600); }

  function draw(id, names, columns, colours, unit) {
    var el = document.getElementById(id);
    if (!el) { return; }
    var hasData = columns.some(function (c) { return c.some(function (v) { return v; }); });
    el.setAttribute("data-points", String(columns.reduce(function (n, c) {
      return n + c.filter(function (v) { return v !== null && v !== 0; }).length;
    }, 0)));
    if (!hasData) {
      var p = document.createElement("p");
      p.className = "chart-empty";
      p.textContent = el.getAttribute("data-empty");
      el.appendChild(p);
    }
    var series = [{}].concat(names.map(function (name) {
      return {label: name, stroke: colours[name] || "#555", width: 2, spanGaps: unit === "ms",
              points: {show: false}, value: function (u, v) { return v === null ? "–" : v + (unit ? " " + unit : ""); }};
    }));
    var opts = {width: width(el), height: 220, series: series,
                axes: [{}, {label: unit || "", size: 60}], scales: {x: {time: true}}, legend: {live: true}};
    var chart = new uPlot(opts, [data.times].concat(columns), el);
    window.rowbellCharts[id] = chart;
    window.addEventListener("resize", function () { chart.setSize({width: width(el), height: 220}); });
  }

  var statuses = Object.keys(data.statuses).sort(function (a, b) {
    return Object.keys(COLOURS).indexOf(a) - Object.keys(COLOURS).indexOf(b);
  });
  draw("chart-deliveries", statuses, statuses.map(function (s) { return data.statuses[s]; }), COLOURS, "");
  var quantiles = ["p50", "p90", "p99"];
  draw("chart-latency", quantiles, quantiles.map(function (q) { return data.latency[q]; }), LATENCY, "ms");
})();
