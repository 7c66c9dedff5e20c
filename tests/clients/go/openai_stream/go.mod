module llmslo.test/openai_stream

go 1.19
