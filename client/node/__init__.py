"""`privdiff-client serve`: a DICOM node on the site that releases what the PACS sends it.

    PACS / modality --C-STORE--> scp  --spool + queue (fsync'ed, committed)--> success response
                                         |
                      releaser: a study quiet for --quiet-time -> privdiff.client.release_pipeline
                                         |
                      forwarder: released files --C-STORE, retries--> research archive

- `spool`: received instances as files, written atomically, within the configured disk bounds;
- `queue`: the node's durable memory (SQLite, WAL): every instance and every forward, so a node
  killed at any point (kill -9 included) resumes without losing or resending an instance;
- `scp`: the storage SCP (C-STORE, C-ECHO, calling-AE allow-list, optional TLS);
- `releaser`: quiet studies go through exactly the folder release (`run_release`) in a child process;
- `forwarder`: the storage SCU towards the research archive, with exponential backoff;
- `serve`: the command line and the node's life cycle.
"""
