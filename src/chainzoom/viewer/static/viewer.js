// chainzoom viewer: every image of a run as an OpenSeadragon layer placed where it sits
// in the input (see chainzoom/viewer/layers.py). Shallow layers first, so deeper ones draw
// on top. The status line reports when a tile of the deepest level of the deepest layer has
// loaded (data-deepest="loaded" on <body>), which the browser test waits for.
(async function () {
  const run = await (await fetch("/layers.json")).json();
  document.title = "chainzoom: " + run.title;
  document.getElementById("title").textContent = run.title + " (" + run.kind + (run.complete ? "" : ", unfinished") + ")";
  const status = document.getElementById("status");
  const viewer = OpenSeadragon({
    id: "viewer",
    prefixUrl: "/static/openseadragon/images/",
    showNavigator: true,
    maxZoomPixelRatio: 4,
    visibilityRatio: 0.5,
  });
  const items = [];
  run.layers.forEach(function (layer, index) {
    viewer.addTiledImage({
      tileSource: layer.source,
      x: layer.x, y: layer.y, width: layer.width,
      index: index,
      success: function (event) { items[index] = event.item; watch(index, event.item); },
    });
    const box = document.createElement("label");
    box.innerHTML = '<input type="checkbox" checked> ' + layer.label;
    box.title = layer.prompt || "";
    box.firstChild.addEventListener("change", function (e) {
      if (items[index]) items[index].setOpacity(e.target.checked ? 1 : 0);
    });
    document.getElementById("layers").appendChild(box);
  });
  function watch(index, item) {
    if (index !== run.layers.length - 1) return;
    const deepest = item.source.maxLevel;
    viewer.addHandler("tile-loaded", function (event) {
      if (event.tiledImage === item && event.tile.level === deepest && document.body.dataset.deepest !== "loaded") {
        document.body.dataset.deepest = "loaded";
        status.textContent = "deepest level loaded";
      }
    });
    if (new URLSearchParams(location.search).has("deepest")) {
      // Test hook: zoom to full resolution of the deepest layer, at its centre.
      const bounds = item.getBounds();
      const center = new OpenSeadragon.Point(bounds.x + bounds.width / 2, bounds.y + bounds.height / 2);
      viewer.viewport.zoomTo(item.imageToViewportZoom(1.0), center, true);
      viewer.viewport.panTo(center, true);
    }
  }
})();
