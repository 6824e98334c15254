// Draws the report's charts into their <svg> elements from the JSON in #report-data.
// Every drawn bar carries its figures in data-* attributes, and each chart says how many bars
// it drew in data-drawn.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("report-data").textContent);

  function el(parent, name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
    if (text !== undefined) {
      node.textContent = text;
    }
    if (parent) {
      parent.appendChild(node);
    }
    return node;
  }

  function count(n) {
    return Number(n).toLocaleString("en-US");
  }

  function rate(n) {
    return n >= 10 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n.toFixed(2);
  }

  // The smallest of 1, 2, 2.5, 5 times a power of ten that is at least v.
  function niceMax(v) {
    if (!(v > 0)) {
      return 1;
    }
    var power = Math.pow(10, Math.floor(Math.log(v) / Math.LN10));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * power >= v) {
        return steps[i] * power;
      }
    }
    return 10 * power;
  }

  // "2026-12-24T09:00:10Z" -> "09:00:10", with the date when the run spans days.
  function clock(iso, withDate) {
    return withDate ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(11, 19);
  }

  function empty(svg, width, height, message) {
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    el(svg, "text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" }, message);
    svg.setAttribute("data-drawn", "0");
  }

  function drawSendRate(svg, sendRate) {
    var W = 720, H = 260, left = 56, right = 12, top = 12, bottom = 44;
    var buckets = sendRate.buckets || [];
    var width = sendRate.bucket_seconds || 1;
    if (buckets.length === 0) {
      empty(svg, W, 120, "No sends recorded yet.");
      return;
    }
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var plotW = W - left - right, plotH = H - top - bottom;
    var peak = 0, total = 0;
    buckets.forEach(function (b) {
      peak = Math.max(peak, b.sent / width);
      total += b.sent;
    });
    var yMax = niceMax(peak);
    // Five steps: the nice maxima (1, 2, 2.5, 5 times a power of ten) divide into round ones.
    for (var g = 0; g <= 5; g++) {
      var y = top + plotH - (plotH * g) / 5;
      el(svg, "line", { x1: left, x2: W - right, y1: y, y2: y, class: g === 0 ? "axis" : "grid" });
      el(svg, "text", { x: left - 6, y: y + 4, "text-anchor": "end" }, rate((yMax * g) / 5));
    }
    el(svg, "text", { x: 12, y: top + plotH / 2, transform: "rotate(-90 12 " + (top + plotH / 2) + ")",
      "text-anchor": "middle" }, "emails/s");
    var slot = plotW / buckets.length;
    var barW = Math.max(1, slot * 0.8);
    var first = buckets[0].start, last = buckets[buckets.length - 1].start;
    var withDate = first.slice(0, 10) !== last.slice(0, 10);
    var bars = el(svg, "g", { class: "bars" });
    buckets.forEach(function (b, i) {
      var perSecond = b.sent / width;
      var h = (plotH * perSecond) / yMax;
      var bar = el(bars, "rect", {
        class: "rate-bar",
        x: (left + i * slot + (slot - barW) / 2).toFixed(2),
        y: (top + plotH - h).toFixed(2),
        width: barW.toFixed(2),
        height: h.toFixed(2),
        "data-start": b.start,
        "data-sent": b.sent,
        "data-rate": perSecond
      });
      el(bar, "title", {}, clock(b.start, withDate) + ": " + count(b.sent) + " emails (" + rate(perSecond) + "/s)");
    });
    var labels = Math.min(buckets.length, 6);
    for (var k = 0; k < labels; k++) {
      var index = labels === 1 ? 0 : Math.round((k * (buckets.length - 1)) / (labels - 1));
      var anchor = labels > 1 && k === 0 ? "start" : labels > 1 && k === labels - 1 ? "end" : "middle";
      var x = anchor === "start" ? left : anchor === "end" ? W - right : left + index * slot + slot / 2;
      el(svg, "text", { x: x, y: top + plotH + 16, "text-anchor": anchor }, clock(buckets[index].start, withDate));
    }
    el(svg, "text", { x: left + plotW / 2, y: H - 6, "text-anchor": "middle" },
      "time (UTC), buckets of " + width + " s; " + count(total) + " emails");
    svg.setAttribute("data-drawn", String(buckets.length));
    svg.setAttribute("data-total", String(total));
  }

  function drawOutcomes(svg, outcomes) {
    var W = 720, row = 26, top = 8, left = 130, right = 90;
    var H = top * 2 + row * outcomes.length;
    if (outcomes.length === 0) {
      empty(svg, W, 120, "Nothing to show.");
      return;
    }
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var plotW = W - left - right;
    var max = 1;
    outcomes.forEach(function (o) {
      max = Math.max(max, o.value);
    });
    var audience = data.report.audience.selected;
    var bars = el(svg, "g", { class: "bars" });
    outcomes.forEach(function (o, i) {
      var y = top + i * row;
      var w = (plotW * o.value) / max;
      el(svg, "text", { x: left - 8, y: y + row / 2 + 4, "text-anchor": "end", class: "label" }, o.label);
      var bar = el(bars, "rect", {
        class: "outcome-bar k-" + o.key,
        x: left,
        y: y + 4,
        width: w.toFixed(2),
        height: row - 8,
        "data-key": o.key,
        "data-value": o.value
      });
      el(bar, "title", {}, o.label + ": " + count(o.value));
      var share = audience > 0 ? " (" + ((100 * o.value) / audience).toFixed(1) + "%)" : "";
      el(svg, "text", { x: left + w + 6, y: y + row / 2 + 4 }, count(o.value) + share);
    });
    el(svg, "line", { x1: left, x2: left, y1: top, y2: H - top, class: "axis" });
    svg.setAttribute("data-drawn", String(outcomes.length));
  }

  drawSendRate(document.getElementById("send-rate-chart"), data.report.send_rate);
  drawOutcomes(document.getElementById("outcomes-chart"), data.outcomes);
})();
