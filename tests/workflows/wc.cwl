cwlVersion: v1.2
class: CommandLineTool
doc: Counts the bytes of a file; the smallest CWL run that imports, runs a job and exports.
baseCommand: [wc, -c]
stdin: $(inputs.text.path)
inputs:
  text: File
outputs:
  count:
    type: stdout
stdout: count.txt
