// Atelier's default graph for the ComfyUI editor (served by atelier/server/frontend.py, listed by /api/extensions).
//
// The editor opens on a graph that is a constant of its bundle: in 1.58 a Z-Image Turbo graph (CLIPLoader,
// EmptySD3LatentImage, ModelSamplingAuraFlow) that the embedded model cannot run. The bundle exposes that constant
// as window.comfyAPI.defaultGraph.defaultGraph, and every place that loads "the default graph" (start-up, the
// "Load Default" button, a new tab) reads the same object. Extensions are imported before the first graph loads,
// so replacing the object's contents here, in place, makes all of them open Atelier's graph instead: the txt2img
// template (embedded model, 128 x 128) with its prompt and titles in the learner's language. The server picks the
// language (the editor's Comfy.Locale setting, else the browser's), so nothing here depends on the bundle's
// internals beyond that one object.

const holder = window.comfyAPI && window.comfyAPI.defaultGraph;
const stock = holder && holder.defaultGraph;

if (stock && typeof stock === "object") {
  const response = await fetch("api/atelier/default_graph", { cache: "no-store" });
  if (response.ok) {
    const graph = await response.json();
    for (const key of Object.keys(stock)) delete stock[key];
    Object.assign(stock, graph);
  }
}

// A graph the lab hands over ("Open in the node editor", the parcours' buttons): the lab leaves it in
// localStorage under atelier.open_workflow and opens this page; once the editor has set itself up (its own
// start-up graph loaded), the handed-over graph replaces it, and the key is removed so a reload does not load it
// again. The editor's own persistence of the last workflow changed between frontend versions; this does not.
const app = window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app;
if (app) {
  app.registerExtension({
    name: "atelier.openFromLab",
    async setup() {
      const text = localStorage.getItem("atelier.open_workflow");
      if (!text) return;
      localStorage.removeItem("atelier.open_workflow");
      await app.loadGraphData(JSON.parse(text));
    },
  });
}
