// NFSD nodes start with their seeds "fixed": queueing an unchanged graph again repeats the run, or resumes it
// where a cancelled one stopped (NFSD Optimizer keeps a cancelled NeRF's state). ComfyUI's frontend gives
// every seed widget a control that defaults to "randomize", which would start a new run on every queue.
// Only freshly added nodes change: a workflow loaded from a file keeps the control values it saved (the
// frontend applies them after `nodeCreated`), and the user can still switch a seed to "randomize".
import { app } from "../../scripts/app.js";

const PACK_PREFIX = "NFSD_";
const FIXED = "fixed";

app.registerExtension({
    name: "nfsd.seedsFixedByDefault",
    nodeCreated(node) {
        if (!node.comfyClass?.startsWith(PACK_PREFIX)) return;
        for (const widget of node.widgets ?? []) {
            for (const control of widget.linkedWidgets ?? []) {
                if (control.options?.values?.includes(FIXED)) control.value = FIXED;
            }
        }
    },
});
