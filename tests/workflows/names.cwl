cwlVersion: v1.2
class: CommandLineTool
doc: |
  Files whose names carry URL and shell metacharacters, through every CWL carrier: passed
  on the command line, listed with their basenames and contents, and copied to outputs
  named after them (written to the store and exported back under those names).
baseCommand:
  - sh
  - -c
  - 'for f in "$@"; do n=$(basename "$f"); printf "%s=" "$n"; cat "$f"; cp "$f" "copy of $n"; done'
  - sh
inputs:
  files:
    type: File[]
    inputBinding:
      position: 1
outputs:
  index:
    type: stdout
  copies:
    type: File[]
    outputBinding:
      glob: "copy of *"
stdout: index.out
