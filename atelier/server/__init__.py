"""The HTTP + WebSocket server that speaks ComfyUI's protocol and serves the lab and the node editor.

The official ComfyUI frontend (comfyui-frontend-package 1.58.1) runs against it unchanged. One file per job:

    app.py             create_app / serve / run_server: wiring, lifecycle, --listen [ADDRESS] and its URL
    files.py           the data directory, safe paths, OutputFiles (the file API nodes write outputs with)
    store.py           queue and history in SQLite (they survive a restart)
    prompt_queue.py    the queue, its worker thread running the graph Executor, executor events -> messages
    scheduler.py       classroom mode's order: turns between learners, caps, batches, pause, expected waits
    merging.py         which prompts may share one sampling call (merge keys), prompts cut into parts
    batch_worker.py    the worker that runs a batch of merged txt2img parts as one sampling call
    hub.py             WebSocket clients, ordered delivery from any thread, binary preview frames
    websocket.py       GET /ws: status + sid, feature_flags
    routes_system.py   users, settings, object_info, system_stats, models, interrupt, free...
    routes_queue.py    prompt, queue, history, jobs
    routes_files.py    view, upload/image, upload/mask
    routes_userdata.py the editor's saved files under user/default/
    frontend.py        index.html + static assets, workflow templates
    settings.py        settings storage and the defaults that keep the editor private and offline
    security.py        cross-origin and DNS-rebinding guards, stored files served by content, CSP + nosniff
    classroom.py       --classroom: join code, learners' identity (signed cookie), what each learner may see
"""
