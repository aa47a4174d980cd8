/* The dashboard's charts, drawn with uPlot from the figures the page embeds (#rowbell-chart-data). */
(function () {
  "use strict";
  var COLOURS = {
    delivered: "#2e7d32", sent: "#66bb6a", opened: "#1e88e5", clicked: "#5e35b1",
    queued: "#9e9e9e", sending: "#78909c", held: "#f9a825", skipped: "#bdbdbd", discarded: "#8d6e63",
    failed: "#c62828", bounced: "#ef6c00", complained: "#ad1457"
  };
  var LATENCY = {p50: "#1e88e5", p90: "#f9a825", p99: "#c62828"};
  var HEIGHT = 220;
  var source = document.getElementById("rowbell-chart-data");
  if (!source || typeof uPlot === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  window.rowbellCharts = {};

  function width(el) { return Math.max(320, el.clientWidth || el.parentNode.clientWidth || 600); }

  // The values a line cannot show: a line joins two points, so a value with no neighbour to join (the only
  // one of a series whose gaps are spanned, or one between two gaps) is drawn as a point. Without this, a
  // range whose deliveries all fall in one bucket draws an empty latency chart.
  function lonely(values, spanGaps) {
    var present = [];
    values.forEach(function (v, i) { if (v !== null && v !== undefined) { present.push(i); } });
    if (spanGaps) { return present.length === 1 ? present : []; }
    return present.filter(function (i) {
      return (i === 0 || values[i - 1] === null) && (i === values.length - 1 || values[i + 1] === null);
    });
  }

  // One time on the x axis (a range of one bucket) is a scale of no width: widen it by a bucket each side.
  function timeRange(u, min, max) {
    if (min !== max) { return [min, max]; }
    var step = data.times.length > 1 ? data.times[1] - data.times[0] : 3600;
    return [min - step, max + step];
  }

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
    var spanGaps = unit === "ms";
    var series = [{}].concat(names.map(function (name, i) {
      var alone = lonely(columns[i], spanGaps);
      return {label: name, stroke: colours[name] || "#555", width: 2, spanGaps: spanGaps,
              points: {show: false, size: 7, fill: colours[name] || "#555",
                       filter: function () { return alone.length ? alone : null; }},
              value: function (u, v) { return v === null ? "–" : v + (unit ? " " + unit : ""); }};
    }));
    var opts = {width: width(el), height: HEIGHT, series: series,
                axes: [{}, {label: unit || "", size: 60}], scales: {x: {time: true, range: timeRange}},
                legend: {live: true}};
    var chart = new uPlot(opts, [data.times].concat(columns), el);
    window.rowbellCharts[id] = chart;
    // Follow the chart's box, not only the window: the box also changes when the navigation sidebar opens or
    // closes, and when the page's layout settles after the chart was first drawn.
    var follow = function () {
      if (chart.width !== width(el)) { chart.setSize({width: width(el), height: HEIGHT}); }
    };
    if (typeof ResizeObserver !== "undefined") {
      new ResizeObserver(follow).observe(el);
    } else {
      window.addEventListener("resize", follow);
    }
  }

  var statuses = Object.keys(data.statuses).sort(function (a, b) {
    return Object.keys(COLOURS).indexOf(a) - Object.keys(COLOURS).indexOf(b);
  });
  draw("chart-deliveries", statuses, statuses.map(function (s) { return data.statuses[s]; }), COLOURS, "");
  var quantiles = ["p50", "p90", "p99"];
  draw("chart-latency", quantiles, quantiles.map(function (q) { return data.latency[q]; }), LATENCY, "ms");
})();
